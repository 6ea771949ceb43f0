//! The emulator over real sockets: the AWS SDK as client where it matters (signing, error
//! mapping, body errors, assuming a role), raw HTTP/1.1 where the bytes on the wire are the
//! point.

use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideomedia::config::retry::RetryConfig;
use aws_sdk_kinesisvideomedia::config::{
    BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig,
};
use aws_sdk_kinesisvideomedia::error::ProvideErrorMetadata;
use aws_sdk_kinesisvideomedia::operation::get_media::GetMediaOutput;
use aws_sdk_kinesisvideomedia::types::{StartSelector, StartSelectorType};
use kvs_emu::{
    ACCESS_KEY, BodyEnd, CallFault, Config, Emulator, Live, Plane, SECRET_KEY, StoredFragment,
    Stream, SyntheticSpec, synthetic,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDLE: Duration = Duration::from_millis(150);

fn fragments(count: usize) -> Vec<StoredFragment> {
    synthetic(&SyntheticSpec {
        fragments: count,
        frames_per_fragment: 4,
        ..SyntheticSpec::default()
    })
}

fn archive(name: &str, count: usize) -> Stream {
    Stream {
        idle_close: IDLE,
        ..Stream::archive(name, fragments(count))
    }
}

fn start(streams: Vec<Stream>) -> Emulator {
    Emulator::start(Config {
        streams,
        ..Config::default()
    })
    .unwrap()
}

fn control(endpoint: &str, secret: &str, key: &str) -> aws_sdk_kinesisvideo::Client {
    control_as(endpoint, Credentials::new(key, secret, None, None, "test"))
}

fn control_as(endpoint: &str, credentials: Credentials) -> aws_sdk_kinesisvideo::Client {
    let conf = aws_sdk_kinesisvideo::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_kinesisvideo::Client::from_conf(conf)
}

fn media(endpoint: &str) -> aws_sdk_kinesisvideomedia::Client {
    media_as(
        endpoint,
        Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"),
    )
}

fn media_as(endpoint: &str, credentials: Credentials) -> aws_sdk_kinesisvideomedia::Client {
    let conf = aws_sdk_kinesisvideomedia::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    aws_sdk_kinesisvideomedia::Client::from_conf(conf)
}

fn selector(kind: StartSelectorType) -> StartSelector {
    StartSelector::builder()
        .start_selector_type(kind)
        .build()
        .unwrap()
}

async fn get_media(
    client: &aws_sdk_kinesisvideomedia::Client,
    stream: &str,
    start: StartSelector,
) -> Result<GetMediaOutput, aws_sdk_kinesisvideomedia::Error> {
    Ok(client
        .get_media()
        .stream_name(stream)
        .start_selector(start)
        .send()
        .await?)
}

/// The whole body, and whether it ended with an error rather than cleanly.
async fn read_body(out: GetMediaOutput) -> (Vec<u8>, bool) {
    let mut payload = out.payload;
    let mut body = Vec::new();
    loop {
        match payload.try_next().await {
            Ok(Some(bytes)) => body.extend_from_slice(&bytes),
            Ok(None) => return (body, false),
            Err(_) => return (body, true),
        }
    }
}

/// What a client's parser makes of a body.
#[derive(Debug, Default)]
struct Parsed {
    fragments: Vec<mkv::Fragment>,
    errors: Vec<mkv::ServiceError>,
    blocks: usize,
    finish: Option<mkv::Finish>,
}

fn parse(body: &[u8]) -> Parsed {
    let mut parser = mkv::Parser::new();
    parser.push(body);
    let mut parsed = Parsed::default();
    while let Some(event) = parser.next_event().unwrap() {
        match event {
            mkv::Event::FragmentEnd(f) => parsed.fragments.push(f),
            mkv::Event::ServiceError(e) => parsed.errors.push(e),
            mkv::Event::BlockStart(_) => parsed.blocks += 1,
            _ => {}
        }
    }
    parsed.finish = Some(parser.finish().unwrap());
    parsed
}

fn fragment_numbers(fragments: &[mkv::Fragment]) -> Vec<String> {
    fragments.iter().map(|f| f.number.clone()).collect()
}

fn stored_numbers(stream: &[StoredFragment]) -> Vec<String> {
    stream.iter().map(|f| f.number().to_owned()).collect()
}

/// Waits (briefly) until the log's GetMedia entry `index` has ended.
async fn body_end(emulator: &Emulator, index: usize) -> Option<BodyEnd> {
    for _ in 0..100 {
        let log = emulator.requests();
        if let Some(end) = log.get(index).and_then(|r| r.body_end) {
            return Some(end);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn the_sdk_downloads_an_archive_stream() {
    let stream = archive("cam1", 5);
    let expected: Vec<String> = stored_numbers(&stream.fragments);
    let emulator = start(vec![stream]);

    let endpoint = control(&emulator.endpoint(), SECRET_KEY, ACCESS_KEY)
        .get_data_endpoint()
        .stream_name("cam1")
        .api_name(ApiName::GetMedia)
        .send()
        .await
        .unwrap();
    assert_eq!(
        endpoint.data_endpoint(),
        Some(emulator.data_endpoint().as_str())
    );

    let client = media(&emulator.data_endpoint());
    let out = get_media(&client, "cam1", selector(StartSelectorType::Earliest))
        .await
        .unwrap();
    assert_eq!(out.content_type(), Some("video/webm"));
    let (body, failed) = read_body(out).await;
    assert!(!failed);
    let parsed = parse(&body);
    assert_eq!(fragment_numbers(&parsed.fragments), expected);
    assert_eq!(parsed.blocks, 5 * 4);
    assert_eq!(parsed.finish, Some(mkv::Finish::Clean));
    // The last fragment is the head.
    assert_eq!(parsed.fragments[4].millis_behind_now, Some(0));
    assert_eq!(parsed.fragments[0].millis_behind_now, Some(8000));

    let log = emulator.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].operation, "GetDataEndpoint");
    assert_eq!(log[0].plane, Plane::Control);
    assert_eq!(log[0].body["APIName"], "GET_MEDIA");
    assert_eq!(log[0].status, 200);
    assert_eq!(log[1].operation, "GetMedia");
    assert_eq!(
        log[1].body["StartSelector"]["StartSelectorType"],
        "EARLIEST"
    );
    assert_eq!(log[1].stream.as_deref(), Some("cam1"));
    assert_eq!(log[1].call_index, Some(0));
    assert_eq!(log[1].region.as_deref(), Some("us-west-2"));
    assert_eq!(log[1].access_key.as_deref(), Some(ACCESS_KEY));
    assert_eq!(log[1].bytes_sent, body.len() as u64);
    assert_eq!(log[1].fragments_sent, 5);
    assert_eq!(body_end(&emulator, 1).await, Some(BodyEnd::Idle));
    assert!(log[0].at <= log[1].at);
}

#[tokio::test]
async fn streams_are_found_by_arn_and_errors_have_the_aws_shape() {
    let stream = archive("cam1", 1);
    let arn = stream.arn();
    assert_eq!(
        arn,
        "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam1/1700000000000"
    );
    let emulator = start(vec![stream]);
    let client = control(&emulator.endpoint(), SECRET_KEY, ACCESS_KEY);

    let by_arn = client
        .get_data_endpoint()
        .stream_arn(&arn)
        .api_name(ApiName::GetMedia)
        .send()
        .await
        .unwrap();
    assert!(by_arn.data_endpoint().is_some());

    let missing = client
        .get_data_endpoint()
        .stream_name("nope")
        .api_name(ApiName::GetMedia)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(missing.is_resource_not_found_exception());
    assert_eq!(
        missing.message(),
        Some("The requested stream is not found or not active.")
    );

    let bad_api = client
        .get_data_endpoint()
        .stream_name("cam1")
        .api_name(ApiName::from("GET_EVERYTHING"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(bad_api.is_invalid_argument_exception());

    let both = client
        .get_data_endpoint()
        .stream_name("cam1")
        .stream_arn(&arn)
        .api_name(ApiName::GetMedia)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(both.is_invalid_argument_exception());

    let media = media(&emulator.data_endpoint());
    let no_number = StartSelector::builder()
        .start_selector_type(StartSelectorType::FragmentNumber)
        .build()
        .unwrap();
    let err = get_media(&media, "cam1", no_number).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidArgumentException"));
    assert!(err.message().unwrap().contains("AfterFragmentNumber"));
    let err = get_media(&media, "nope", selector(StartSelectorType::Now))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        aws_sdk_kinesisvideomedia::Error::ResourceNotFoundException(_)
    ));

    // GetMedia on the control plane.
    let wrong = aws_sdk_kinesisvideomedia::Client::from_conf(
        media
            .config()
            .to_builder()
            .endpoint_url(emulator.endpoint())
            .build(),
    );
    let err = get_media(&wrong, "cam1", selector(StartSelectorType::Now))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        aws_sdk_kinesisvideomedia::Error::InvalidEndpointException(_)
    ));

    let statuses: Vec<(u16, Option<String>)> = emulator
        .requests()
        .into_iter()
        .map(|r| (r.status, r.error_type))
        .collect();
    let expected = [
        (200, None),
        (404, Some("ResourceNotFoundException")),
        (400, Some("InvalidArgumentException")),
        (400, Some("InvalidArgumentException")),
        (400, Some("InvalidArgumentException")),
        (404, Some("ResourceNotFoundException")),
        (400, Some("InvalidEndpointException")),
    ]
    .map(|(status, error)| (status, error.map(String::from)));
    assert_eq!(statuses, expected);
}

#[tokio::test]
async fn signatures_are_checked() {
    let emulator = start(vec![archive("cam1", 1)]);
    let call = |secret: &'static str, key: &'static str| {
        let client = control(&emulator.endpoint(), secret, key);
        async move {
            client
                .get_data_endpoint()
                .stream_name("cam1")
                .api_name(ApiName::GetMedia)
                .send()
                .await
                .map_err(|e| e.into_service_error())
        }
    };
    let wrong_secret = call("not-the-secret", ACCESS_KEY).await.unwrap_err();
    assert_eq!(wrong_secret.code(), Some("InvalidSignatureException"));
    assert_eq!(
        wrong_secret.message(),
        Some(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method."
        )
    );
    let unknown_key = call(SECRET_KEY, "AKIDSOMEONEELSE").await.unwrap_err();
    assert_eq!(unknown_key.code(), Some("UnrecognizedClientException"));
    assert_eq!(
        unknown_key.message(),
        Some("The security token included in the request is invalid.")
    );
    call(SECRET_KEY, ACCESS_KEY).await.unwrap();
    let log = emulator.requests();
    assert_eq!(log[1].access_key.as_deref(), Some("AKIDSOMEONEELSE"));
    assert_eq!(log[1].status, 403);

    let relaxed = Emulator::start(Config {
        verify_signatures: false,
        streams: vec![archive("cam1", 1)],
        ..Config::default()
    })
    .unwrap();
    control(&relaxed.endpoint(), "anything", "AKIDANY")
        .get_data_endpoint()
        .stream_name("cam1")
        .api_name(ApiName::GetMedia)
        .send()
        .await
        .unwrap();
}

/// A raw HTTP/1.1 exchange: status, headers (lower-case names), de-chunked body, and whether the
/// chunked body was terminated.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    terminated: bool,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn raw_post(endpoint: &str, path: &str, body: &str) -> Raw {
    raw_request(endpoint, path, "application/json", body).await
}

async fn raw_request(endpoint: &str, path: &str, content_type: &str, body: &str) -> Raw {
    let host = endpoint.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    // A dropped connection may surface as a reset: it ends the response all the same.
    while let Ok(n @ 1..) = socket.read(&mut buf).await {
        bytes.extend_from_slice(&buf[..n]);
    }
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(bytes[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_ascii_lowercase(), v.to_owned())
        })
        .collect();
    let mut rest = &bytes[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    if !chunked {
        return Raw {
            status,
            headers,
            body: rest.to_vec(),
            terminated: true,
        };
    }
    let (mut body, mut terminated) = (Vec::new(), false);
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        let data = &rest[line_end + 2..];
        if size == 0 {
            terminated = data.starts_with(b"\r\n");
            break;
        }
        let take = size.min(data.len());
        body.extend_from_slice(&data[..take]);
        if take < size || data.len() < size + 2 {
            break;
        }
        rest = &data[size + 2..];
    }
    Raw {
        status,
        headers,
        body,
        terminated,
    }
}

const EARLIEST: &str = r#"{"StartSelector":{"StartSelectorType":"EARLIEST"},"StreamName":"cam1"}"#;

fn unsigned(streams: Vec<Stream>) -> Emulator {
    Emulator::start(Config {
        verify_signatures: false,
        streams,
        ..Config::default()
    })
    .unwrap()
}

#[tokio::test]
async fn the_wire_format_matches_the_service() {
    let stream = archive("cam1", 2);
    let size: u64 = stream.fragments.iter().map(StoredFragment::size).sum();
    let emulator = unsigned(vec![stream]);

    let ok = raw_post(&emulator.data_endpoint(), "/getMedia", EARLIEST).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type"), Some("video/webm"));
    assert_eq!(ok.header("transfer-encoding"), Some("chunked"));
    assert!(ok.header("x-amzn-requestid").is_some());
    assert!(ok.terminated);
    // MILLIS_BEHIND_NOW of the first fragment is "2000", three digits more than at the head.
    assert_eq!(ok.body.len() as u64, size + 3);

    let not_found = raw_post(
        &emulator.data_endpoint(),
        "/getMedia",
        r#"{"StartSelector":{"StartSelectorType":"NOW"},"StreamName":"other"}"#,
    )
    .await;
    assert_eq!(not_found.status, 404);
    assert_eq!(
        not_found.header("x-amzn-errortype"),
        Some("ResourceNotFoundException")
    );
    assert!(not_found.header("x-amzn-requestid").is_some());
    assert_eq!(
        not_found.body,
        br#"{"Message":"The requested stream is not found or not active."}"#
    );

    let wrong_plane = raw_post(&emulator.endpoint(), "/getMedia", EARLIEST).await;
    assert_eq!(wrong_plane.status, 400);
    assert_eq!(
        wrong_plane.header("x-amzn-errortype"),
        Some("InvalidEndpointException")
    );
    let unknown = raw_post(&emulator.endpoint(), "/deleteStream", "{}").await;
    assert_eq!(unknown.status, 404);
    let unsigned_check = raw_post(
        &start(vec![archive("cam1", 1)]).endpoint(),
        "/getDataEndpoint",
        r#"{"APIName":"GET_MEDIA","StreamName":"cam1"}"#,
    )
    .await;
    assert_eq!(unsigned_check.status, 403);
    assert_eq!(
        unsigned_check.header("x-amzn-errortype"),
        Some("MissingAuthenticationTokenException")
    );

    let namespaced = Emulator::start(Config {
        verify_signatures: false,
        namespaced_error_types: true,
        ..Config::default()
    })
    .unwrap();
    let err = raw_post(&namespaced.endpoint(), "/getDataEndpoint", "{}").await;
    assert_eq!(
        err.header("x-amzn-errortype"),
        Some("InvalidArgumentException:https://kinesisvideo.amazonaws.com/doc/2017-09-30/")
    );
}

#[tokio::test]
async fn a_cut_drops_the_connection_mid_body() {
    let mut stream = archive("cam1", 3);
    let first = stream.fragments[0].chunk(4000).len();
    let second = stream.fragments[1].chunk(2000).len();
    stream.faults = vec![
        CallFault::Cut { after_bytes: 1000 },
        CallFault::CutInFragment {
            index: 1,
            at_fraction: 0.5,
        },
        CallFault::Cut { after_bytes: 1000 },
    ];
    let emulator = unsigned(vec![stream]);
    let client = media(&emulator.data_endpoint());

    let out = get_media(&client, "cam1", selector(StartSelectorType::Earliest))
        .await
        .unwrap();
    let (body, failed) = read_body(out).await;
    assert!(failed, "the SDK must see an error, not a clean end");
    assert_eq!(body.len(), 1000);

    let out = get_media(&client, "cam1", selector(StartSelectorType::Earliest))
        .await
        .unwrap();
    let (body, failed) = read_body(out).await;
    assert!(failed);
    assert_eq!(body.len(), first + second / 2);
    let parsed = parse(&body);
    assert_eq!(parsed.fragments.len(), 1);
    assert!(matches!(
        parsed.finish,
        Some(mkv::Finish::Truncated { fragment: Some(_) })
    ));

    let raw = raw_post(&emulator.data_endpoint(), "/getMedia", EARLIEST).await;
    assert_eq!(raw.status, 200);
    assert!(!raw.terminated);
    assert_eq!(raw.body.len(), 1000);

    assert_eq!(body_end(&emulator, 0).await, Some(BodyEnd::Cut));
    assert_eq!(emulator.requests()[1].fragments_sent, 1);
}

#[tokio::test]
async fn http_faults_come_back_as_typed_errors() {
    let mut stream = archive("cam1", 1);
    stream.faults = vec![
        CallFault::Status500,
        CallFault::Throttle,
        CallFault::ConnectionLimit,
        CallFault::InvalidEndpoint,
        CallFault::NotAuthorized,
        CallFault::InvalidArgument {
            message: "StartSelector is not valid here".into(),
        },
        CallFault::ExpiredToken,
        CallFault::None,
    ];
    let emulator = start(vec![stream]);
    let client = media(&emulator.data_endpoint());
    let mut codes = Vec::new();
    let mut messages = Vec::new();
    for _ in 0..7 {
        let err = get_media(&client, "cam1", selector(StartSelectorType::Earliest))
            .await
            .unwrap_err();
        codes.push(err.code().unwrap_or_default().to_owned());
        messages.push(err.message().unwrap_or_default().to_owned());
    }
    assert_eq!(
        codes,
        [
            "InternalFailure",
            "ClientLimitExceededException",
            "ConnectionLimitExceededException",
            "InvalidEndpointException",
            "NotAuthorizedException",
            "InvalidArgumentException",
            "NotAuthorizedException",
        ]
    );
    assert_eq!(messages[5], "StartSelector is not valid here");
    assert_eq!(
        messages[6],
        "The security token included in the request is expired"
    );
    let out = get_media(&client, "cam1", selector(StartSelectorType::Earliest))
        .await
        .unwrap();
    assert_eq!(parse(&read_body(out).await.0).fragments.len(), 1);
    let statuses: Vec<u16> = emulator.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 400, 400, 400, 401, 400, 401, 200]);
}

#[tokio::test]
async fn a_stall_pauses_the_body() {
    let mut stream = archive("cam1", 2);
    stream.faults = vec![CallFault::Stall { ms: 300 }];
    let emulator = unsigned(vec![stream]);
    let client = media(&emulator.data_endpoint());
    let began = Instant::now();
    let out = get_media(&client, "cam1", selector(StartSelectorType::Earliest))
        .await
        .unwrap();
    let (body, failed) = read_body(out).await;
    assert!(!failed);
    assert_eq!(parse(&body).fragments.len(), 2);
    assert!(began.elapsed() >= Duration::from_millis(300) + IDLE);
}

#[tokio::test]
async fn in_band_errors_end_the_body() {
    let mut stream = archive("cam1", 4);
    let third = stream.fragments[2].number().to_owned();
    stream.faults = vec![CallFault::InBandError {
        after_fragments: 2,
        id: 5000,
        code: "INTERNAL_ERROR".into(),
    }];
    let emulator = unsigned(vec![stream]);
    let out = get_media(
        &media(&emulator.data_endpoint()),
        "cam1",
        selector(StartSelectorType::Earliest),
    )
    .await
    .unwrap();
    let (body, failed) = read_body(out).await;
    assert!(!failed);
    let parsed = parse(&body);
    assert_eq!(parsed.fragments.len(), 2);
    assert_eq!(
        parsed.errors,
        [mkv::ServiceError {
            id: Some(5000),
            code: Some("INTERNAL_ERROR".into()),
            fragment_number: Some(third),
        }]
    );
    assert_eq!(body_end(&emulator, 0).await, Some(BodyEnd::InBandError));
}

#[tokio::test]
async fn continuation_tokens_resume_after_their_fragment() {
    let stream = archive("cam1", 4);
    let numbers: Vec<String> = stored_numbers(&stream.fragments);
    let producer_ms = stream.fragments[2].producer_ms();
    let emulator = start(vec![stream]);
    let client = media(&emulator.data_endpoint());

    let token = StartSelector::builder()
        .start_selector_type(StartSelectorType::ContinuationToken)
        .continuation_token(&numbers[1])
        .build()
        .unwrap();
    let body = read_body(get_media(&client, "cam1", token).await.unwrap())
        .await
        .0;
    assert_eq!(numbers_of(&body), numbers[2..]);

    let at = StartSelector::builder()
        .start_selector_type(StartSelectorType::FragmentNumber)
        .after_fragment_number(&numbers[1])
        .build()
        .unwrap();
    let body = read_body(get_media(&client, "cam1", at).await.unwrap())
        .await
        .0;
    assert_eq!(numbers_of(&body), numbers[1..]);

    let time = StartSelector::builder()
        .start_selector_type(StartSelectorType::ProducerTimestamp)
        .start_timestamp(
            aws_sdk_kinesisvideomedia::primitives::DateTime::from_millis(producer_ms + 1999),
        )
        .build()
        .unwrap();
    let body = read_body(get_media(&client, "cam1", time).await.unwrap())
        .await
        .0;
    assert_eq!(numbers_of(&body), numbers[2..]);

    let now = read_body(
        get_media(&client, "cam1", selector(StartSelectorType::Now))
            .await
            .unwrap(),
    )
    .await
    .0;
    assert!(now.is_empty(), "NOW on an archive stream sends nothing");
}

fn numbers_of(body: &[u8]) -> Vec<String> {
    fragment_numbers(&parse(body).fragments)
}

#[tokio::test]
async fn expired_fragments_are_reported_in_band() {
    let stream = Stream {
        retention_ms: Some(5000),
        ..archive("cam1", 5)
    };
    let numbers: Vec<String> = stored_numbers(&stream.fragments);
    let emulator = start(vec![stream]);
    let client = media(&emulator.data_endpoint());
    let token = StartSelector::builder()
        .start_selector_type(StartSelectorType::ContinuationToken)
        .continuation_token(&numbers[0])
        .build()
        .unwrap();
    let body = read_body(get_media(&client, "cam1", token).await.unwrap())
        .await
        .0;
    let parsed = parse(&body);
    assert_eq!(
        parsed.errors,
        [mkv::ServiceError {
            id: Some(4000),
            code: Some("FRAGMENT_NOT_FOUND".into()),
            fragment_number: Some(numbers[0].clone()),
        }]
    );
    // The stream's clock is the end of its 10 s: 5 s of retention keeps the fragments that
    // start at 6 s and 8 s.
    assert_eq!(fragment_numbers(&parsed.fragments), numbers[3..]);

    let earliest = read_body(
        get_media(&client, "cam1", selector(StartSelectorType::Earliest))
            .await
            .unwrap(),
    )
    .await
    .0;
    assert_eq!(numbers_of(&earliest), numbers[3..]);
}

#[tokio::test]
async fn live_streams_deliver_fragments_as_they_arrive() {
    // 2 s fragments at 10x: one every 200 ms; fragments 0 to 2 are there at the start.
    let stream = Stream {
        idle_close: Duration::from_millis(300),
        live: Some(Live {
            speed: 10.0,
            backlog: 2,
        }),
        ..Stream::archive("live", fragments(6))
    };
    let numbers = stored_numbers(&stream.fragments);
    let before_start = Instant::now();
    let emulator = start(vec![stream]);
    let client = media(&emulator.data_endpoint());

    let (now, earliest) = tokio::join!(
        async {
            let out = get_media(&client, "live", selector(StartSelectorType::Now))
                .await
                .unwrap();
            read_body(out).await.0
        },
        async {
            let out = get_media(&client, "live", selector(StartSelectorType::Earliest))
                .await
                .unwrap();
            let answered = Instant::now();
            let mut payload = out.payload;
            let mut arrivals = Vec::new();
            let mut body = Vec::new();
            while let Some(bytes) = payload.try_next().await.unwrap() {
                body.extend_from_slice(&bytes);
                arrivals.push((Instant::now(), parse(&body).fragments.len()));
            }
            (body, answered, arrivals)
        }
    );
    // NOW: only what arrived after the call (fragment 2 arrived at the start).
    assert_eq!(numbers_of(&now), numbers[3..]);
    let (body, answered, arrivals) = earliest;
    let parsed = parse(&body);
    assert_eq!(fragment_numbers(&parsed.fragments), numbers);
    // The backlog comes at once, the last fragment when it arrives, 600 ms after the start.
    let when = |count: usize| arrivals.iter().find(|(_, n)| *n >= count).unwrap().0;
    assert!(
        when(3) - answered < Duration::from_millis(150),
        "{arrivals:?}"
    );
    assert!(
        when(6) - before_start >= Duration::from_millis(600),
        "{arrivals:?}"
    );
    // Live fragments are sent at the head.
    assert_eq!(parsed.fragments[5].millis_behind_now, Some(0));
    assert_eq!(parsed.fragments[0].millis_behind_now, Some(4000));
}

#[tokio::test]
async fn max_session_ends_a_live_body() {
    let stream = Stream {
        max_session: Some(Duration::from_millis(250)),
        idle_close: Duration::from_secs(5),
        ..Stream::live("live", fragments(50), 20.0)
    };
    let emulator = start(vec![stream]);
    let out = get_media(
        &media(&emulator.data_endpoint()),
        "live",
        selector(StartSelectorType::Earliest),
    )
    .await
    .unwrap();
    let began = Instant::now();
    let (body, failed) = read_body(out).await;
    assert!(!failed);
    assert!(began.elapsed() < Duration::from_secs(2));
    let count = parse(&body).fragments.len();
    assert!((1..50).contains(&count), "{count}");
    assert_eq!(body_end(&emulator, 0).await, Some(BodyEnd::MaxSession));
}

#[tokio::test]
async fn the_service_limits_are_enforced() {
    let rate = Stream {
        enforce_limits: true,
        idle_close: Duration::from_millis(10),
        ..Stream::archive("rate", fragments(1))
    };
    let connections = Stream {
        enforce_limits: true,
        idle_close: Duration::from_secs(2),
        ..Stream::archive("connections", fragments(1))
    };
    let emulator = start(vec![rate, connections]);
    let client = media(&emulator.data_endpoint());

    let mut outcomes = Vec::new();
    for _ in 0..6 {
        let result = get_media(&client, "rate", selector(StartSelectorType::Earliest)).await;
        outcomes.push(match result {
            Ok(out) => read_body(out).await.1.to_string(),
            Err(e) => e.code().unwrap_or_default().to_owned(),
        });
    }
    assert_eq!(
        outcomes,
        [
            "false",
            "false",
            "false",
            "false",
            "false",
            "ClientLimitExceededException"
        ]
    );

    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            get_media(&client, "connections", selector(StartSelectorType::Now))
                .await
                .unwrap(),
        );
    }
    let err = get_media(&client, "connections", selector(StartSelectorType::Now))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        aws_sdk_kinesisvideomedia::Error::ConnectionLimitExceededException(_)
    ));
    assert_eq!(emulator.requests().last().unwrap().call_index, Some(3));

    // Bodies the client drops free their connection slot.
    drop(open);
    for entry in 6..9 {
        assert_eq!(body_end(&emulator, entry).await, Some(BodyEnd::ClientGone));
    }
    get_media(&client, "connections", selector(StartSelectorType::Now))
        .await
        .unwrap();
}

#[tokio::test]
async fn faults_can_repeat_for_every_call() {
    let every = Stream {
        faults: vec![CallFault::Cut { after_bytes: 700 }],
        fault_cycle: true,
        ..archive("every", 3)
    };
    let alternate = Stream {
        faults: vec![CallFault::None, CallFault::Throttle],
        fault_cycle: true,
        ..archive("alternate", 1)
    };
    let once = Stream {
        faults: vec![CallFault::Throttle],
        ..archive("once", 1)
    };
    let emulator = unsigned(vec![every, alternate, once]);
    let client = media(&emulator.data_endpoint());
    for _ in 0..3 {
        let out = get_media(&client, "every", selector(StartSelectorType::Earliest))
            .await
            .unwrap();
        let (body, failed) = read_body(out).await;
        assert!(failed);
        assert_eq!(body.len(), 700);
    }
    let mut outcomes = Vec::new();
    for stream in [
        "alternate",
        "alternate",
        "alternate",
        "alternate",
        "once",
        "once",
    ] {
        let result = get_media(&client, stream, selector(StartSelectorType::Earliest)).await;
        outcomes.push(match result {
            Ok(out) => format!(
                "{} fragment",
                parse(&read_body(out).await.0).fragments.len()
            ),
            Err(e) => e.code().unwrap_or_default().to_owned(),
        });
    }
    let throttled = "ClientLimitExceededException";
    assert_eq!(
        outcomes,
        [
            "1 fragment",
            throttled,
            "1 fragment",
            throttled,
            throttled,
            "1 fragment"
        ]
    );
}

#[tokio::test]
async fn stale_continuation_tokens_can_be_refused() {
    let strict = Stream {
        retention_ms: Some(5000),
        reject_unknown_tokens: true,
        ..archive("cam1", 5)
    };
    let numbers = stored_numbers(&strict.fragments);
    let emulator = start(vec![strict]);
    let client = media(&emulator.data_endpoint());
    let token = |token: &str| {
        StartSelector::builder()
            .start_selector_type(StartSelectorType::ContinuationToken)
            .continuation_token(token)
            .build()
            .unwrap()
    };

    // Fragment 0 expired by retention (the stream keeps 3 and 4); "1234" was never a fragment.
    for stale in [numbers[0].as_str(), "1234"] {
        let err = get_media(&client, "cam1", token(stale)).await.unwrap_err();
        assert!(
            matches!(
                err,
                aws_sdk_kinesisvideomedia::Error::InvalidArgumentException(_)
            ),
            "{err:?}"
        );
        assert_eq!(err.message(), Some("ContinuationToken is not valid"));
    }
    // A token the stream still holds resumes after its fragment.
    let body = read_body(
        get_media(&client, "cam1", token(&numbers[3]))
            .await
            .unwrap(),
    )
    .await
    .0;
    assert_eq!(numbers_of(&body), numbers[4..]);
    // Fragment numbers are not tokens: an expired one is still reported in band.
    let expired_number = StartSelector::builder()
        .start_selector_type(StartSelectorType::FragmentNumber)
        .after_fragment_number(&numbers[0])
        .build()
        .unwrap();
    let body = read_body(get_media(&client, "cam1", expired_number).await.unwrap())
        .await
        .0;
    let parsed = parse(&body);
    assert_eq!(parsed.errors.len(), 1);
    assert_eq!(parsed.errors[0].id, Some(4000));
    assert_eq!(fragment_numbers(&parsed.fragments), numbers[3..]);

    let statuses: Vec<u16> = emulator.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 400, 200, 200]);
}

const ROLE: &str = "arn:aws:iam::123456789012:role/kvs-reader";

/// An SDK configuration as kvs-dl loads it: the endpoint for every service, STS included.
async fn sdk_config(endpoint: &str, key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

#[tokio::test]
async fn an_assumed_role_reads_the_stream() {
    let stream = archive("cam1", 3);
    let expected = stored_numbers(&stream.fragments);
    let emulator = Emulator::start(Config {
        roles: vec![ROLE.into()],
        streams: vec![stream],
        ..Config::default()
    })
    .unwrap();

    // As kvs-dl --role-arn does it.
    let sdk = sdk_config(&emulator.endpoint(), ACCESS_KEY, SECRET_KEY).await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(ROLE)
        .session_name("kvs-dl")
        .configure(&sdk)
        .build()
        .await;
    let asked = SystemTime::now();
    let temporary = provider.provide_credentials().await.unwrap();
    assert!(temporary.access_key_id().starts_with("ASIA"));
    assert_ne!(temporary.secret_access_key(), SECRET_KEY);
    assert!(temporary.session_token().is_some());
    let lifetime = temporary.expiry().unwrap().duration_since(asked).unwrap();
    assert!((3598..=3601).contains(&lifetime.as_secs()), "{lifetime:?}");

    let sdk = sdk
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build();
    let endpoint = aws_sdk_kinesisvideo::Client::new(&sdk)
        .get_data_endpoint()
        .stream_name("cam1")
        .api_name(ApiName::GetMedia)
        .send()
        .await
        .unwrap();
    let media_conf = aws_sdk_kinesisvideomedia::config::Builder::from(&sdk)
        .endpoint_url(endpoint.data_endpoint().unwrap())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    let client = aws_sdk_kinesisvideomedia::Client::from_conf(media_conf);
    let out = get_media(&client, "cam1", selector(StartSelectorType::Earliest))
        .await
        .unwrap();
    assert_eq!(numbers_of(&read_body(out).await.0), expected);

    let log = emulator.requests();
    let assume_role = &log[0];
    assert_eq!(assume_role.operation, "AssumeRole");
    assert_eq!(assume_role.plane, Plane::Control);
    assert_eq!(assume_role.status, 200);
    assert_eq!(assume_role.access_key.as_deref(), Some(ACCESS_KEY));
    assert_eq!(assume_role.assumed_role, None);
    assert_eq!(assume_role.body["Action"], "AssumeRole");
    assert_eq!(assume_role.body["RoleArn"], ROLE);
    assert_eq!(assume_role.body["RoleSessionName"], "kvs-dl");
    let kvs: Vec<_> = log.iter().filter(|r| r.operation != "AssumeRole").collect();
    let operations: Vec<&str> = kvs.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(operations, ["GetDataEndpoint", "GetMedia"]);
    for request in kvs {
        assert_eq!(request.status, 200);
        assert_eq!(request.assumed_role.as_deref(), Some(ROLE));
        assert!(request.access_key.as_deref().unwrap().starts_with("ASIA"));
    }
}

#[tokio::test]
async fn temporary_credentials_are_checked_like_aws_checks_them() {
    let emulator = Emulator::start(Config {
        roles: vec![ROLE.into()],
        streams: vec![archive("cam1", 1)],
        ..Config::default()
    })
    .unwrap();
    let sdk = sdk_config(&emulator.endpoint(), ACCESS_KEY, SECRET_KEY).await;
    let sts = aws_sdk_sts::Client::new(&sdk);
    let assume = |client: &aws_sdk_sts::Client, role: &str| {
        client
            .assume_role()
            .role_arn(role)
            .role_session_name("kvs-dl")
            .send()
    };
    let issued = assume(&sts, ROLE).await.unwrap();
    let issued = issued.credentials().unwrap();
    // One hour from the call, to the second.
    let lifetime = issued.expiration().secs() - now_s();
    assert!((3599..=3600).contains(&lifetime), "{lifetime}");
    let with_token = |token: Option<&str>| {
        Credentials::new(
            issued.access_key_id(),
            issued.secret_access_key(),
            token.map(str::to_owned),
            None,
            "test",
        )
    };
    let get_endpoint = |credentials: Credentials| {
        let client = control_as(&emulator.endpoint(), credentials);
        async move {
            client
                .get_data_endpoint()
                .stream_name("cam1")
                .api_name(ApiName::GetMedia)
                .send()
                .await
                .map_err(|e| e.into_service_error())
        }
    };
    get_endpoint(with_token(Some(issued.session_token())))
        .await
        .unwrap();
    for token in [None, Some("another-token")] {
        let err = get_endpoint(with_token(token)).await.unwrap_err();
        assert_eq!(err.code(), Some("UnrecognizedClientException"), "{token:?}");
    }
    // The temporary secret signs; the long-term one does not.
    let wrong_secret = Credentials::new(
        issued.access_key_id(),
        SECRET_KEY,
        Some(issued.session_token().to_owned()),
        None,
        "test",
    );
    let err = get_endpoint(wrong_secret).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"));

    // AssumeRole refusals, in the codes STS uses.
    let other_role = "arn:aws:iam::123456789012:role/kvs-writer";
    let (code, message, status) = sts_failure(assume(&sts, other_role).await.unwrap_err());
    assert_eq!((code.as_str(), status), ("AccessDenied", Some(403)));
    assert_eq!(
        message,
        format!(
            "User: arn:aws:iam::123456789012:user/kvs-emu is not authorized to perform: \
             sts:AssumeRole on resource: {other_role}"
        )
    );
    let (code, _, status) = sts_failure(assume(&sts, "kvs-reader").await.unwrap_err());
    assert_eq!((code.as_str(), status), ("ValidationError", Some(400)));
    let chained = aws_sdk_sts::Client::new(
        &sdk.to_builder()
            .credentials_provider(SharedCredentialsProvider::new(with_token(Some(
                issued.session_token(),
            ))))
            .build(),
    );
    let (code, message, _) = sts_failure(assume(&chained, ROLE).await.unwrap_err());
    assert_eq!(code, "AccessDenied");
    assert!(
        message.starts_with("User: arn:aws:sts::123456789012:assumed-role/kvs-reader/kvs-dl "),
        "{message}"
    );
    let wrong = sdk_config(&emulator.endpoint(), ACCESS_KEY, "not-the-secret").await;
    let (code, _, status) = sts_failure(
        assume(&aws_sdk_sts::Client::new(&wrong), ROLE)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code.as_str(), status),
        ("SignatureDoesNotMatch", Some(403))
    );

    let log = emulator.requests();
    let summary: Vec<(&str, u16, bool)> = log
        .iter()
        .map(|r| (r.operation.as_str(), r.status, r.assumed_role.is_some()))
        .collect();
    assert_eq!(
        summary,
        [
            ("AssumeRole", 200, false),
            ("GetDataEndpoint", 200, true),
            ("GetDataEndpoint", 403, true),
            ("GetDataEndpoint", 403, true),
            ("GetDataEndpoint", 403, true),
            ("AssumeRole", 403, false),
            ("AssumeRole", 400, false),
            ("AssumeRole", 403, true),
            ("AssumeRole", 403, false),
        ]
    );
}

type AssumeRoleFailure = aws_sdk_sts::error::SdkError<
    aws_sdk_sts::operation::assume_role::AssumeRoleError,
    aws_sdk_sts::config::http::HttpResponse,
>;

/// The error code and message the SDK read, and the HTTP status.
fn sts_failure(err: AssumeRoleFailure) -> (String, String, Option<u16>) {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let err = err.into_service_error();
    (
        err.code().unwrap_or_default().to_owned(),
        err.message().unwrap_or_default().to_owned(),
        status,
    )
}

/// Now, in whole seconds since the epoch.
fn now_s() -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    now.as_secs() as i64
}

#[tokio::test]
async fn sts_answers_have_the_aws_query_shape() {
    let unsigned = Emulator::start(Config {
        verify_signatures: false,
        roles: vec![ROLE.into()],
        ..Config::default()
    })
    .unwrap();
    let form = "application/x-www-form-urlencoded";
    let assume = |role: &str| {
        format!(
            "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=s1",
            role.replace(':', "%3A").replace('/', "%2F")
        )
    };

    let ok = raw_request(&unsigned.endpoint(), "/", form, &assume(ROLE)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type"), Some("text/xml"));
    let xml = String::from_utf8(ok.body.clone()).unwrap();
    assert!(
        xml.starts_with(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
             <AssumeRoleResult>\n    <Credentials>\n      <AccessKeyId>ASIA"
        ),
        "{xml}"
    );
    assert!(xml.contains("<Arn>arn:aws:sts::123456789012:assumed-role/kvs-reader/s1</Arn>"));
    let id = ok.header("x-amzn-requestid").unwrap();
    assert!(xml.contains(&format!("<RequestId>{id}</RequestId>")));

    let invalid = raw_request(
        &unsigned.endpoint(),
        "/",
        form,
        &assume("arn:aws:iam::123456789012:role/<other>"),
    )
    .await;
    assert_eq!(invalid.status, 400);
    let xml = String::from_utf8(invalid.body.clone()).unwrap();
    let id = invalid.header("x-amzn-requestid").unwrap();
    assert_eq!(
        xml,
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    \
             <Type>Sender</Type>\n    <Code>ValidationError</Code>\n    <Message>1 validation \
             error detected: Value &apos;arn:aws:iam::123456789012:role/&lt;other&gt;&apos; at \
             &apos;roleArn&apos; failed to satisfy constraint: Member must be a role ARN, \
             arn:aws:iam::&lt;12 digits&gt;:role/&lt;name&gt;</Message>\n  </Error>\n  \
             <RequestId>{id}</RequestId>\n</ErrorResponse>\n"
        )
    );
    let other = raw_request(&unsigned.endpoint(), "/", form, "Action=GetCallerIdentity").await;
    assert_eq!(other.status, 400);
    assert!(
        String::from_utf8(other.body)
            .unwrap()
            .contains("<Code>InvalidAction</Code>")
    );

    let signed = start(Vec::new());
    let anonymous = raw_request(&signed.endpoint(), "/", form, &assume(ROLE)).await;
    assert_eq!(anonymous.status, 403);
    assert!(
        String::from_utf8(anonymous.body)
            .unwrap()
            .contains("<Code>MissingAuthenticationToken</Code>")
    );
    // STS lives on the control plane only.
    let data = raw_request(&unsigned.data_endpoint(), "/", form, &assume(ROLE)).await;
    assert_eq!(data.status, 404);
    let operations: Vec<String> = unsigned
        .requests()
        .into_iter()
        .map(|r| r.operation)
        .collect();
    assert_eq!(
        operations,
        ["AssumeRole", "AssumeRole", "GetCallerIdentity", "/"]
    );

    let bad_role = Emulator::start(Config {
        roles: vec!["reader".into()],
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(bad_role.kind(), std::io::ErrorKind::InvalidInput);
}

#[cfg(unix)]
#[test]
fn the_binary_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-emu"))
        .args(["--port", "0", "--stream", "cam1=synthetic:2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    let endpoint = banner
        .strip_prefix("kvs-emu: control endpoint http://")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{banner}"))
        .to_owned();
    std::net::TcpStream::connect(&endpoint).unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("kvs-emu did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(stderr, "");
    assert!(std::net::TcpStream::connect(&endpoint).is_err());
}

#[tokio::test]
async fn a_frame_paced_live_stream_sends_each_frame_at_its_time() {
    // Two fragments of 4 frames over 2 s each, played 4 times faster: a frame every 125 ms.
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("frames.log");
    let stream = Stream {
        live: Some(kvs_emu::Live {
            speed: 4.0,
            backlog: 0,
        }),
        frame_paced: true,
        frame_log: Some(log_path.clone()),
        ..archive("cam1", 2)
    };
    let emulator = start(vec![stream]);
    let client = media(&emulator.data_endpoint());
    let out = get_media(&client, "cam1", selector(StartSelectorType::Earliest))
        .await
        .unwrap();
    let (body, failed) = read_body(out).await;
    assert!(!failed);
    assert_eq!(parse(&body).blocks, 8, "every frame, whole");
    let sent: Vec<i64> = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(sent.len(), 8, "one line per frame");
    // Within each fragment the frames are due 500 ms / 4 = 125 ms apart, so the first and the
    // last 375 ms apart; a whole-fragment send would put them within a millisecond. The
    // scheduler is never early, but may be late for one frame and on time for the next, so a
    // loaded machine shortens a gap: the bound leaves it 125 ms of lateness.
    for fragment in sent.chunks(4) {
        let span_ms = (fragment[3] - fragment[0]) as f64 / 1000.0;
        assert!(span_ms >= 250.0, "frames over {span_ms} ms: {sent:?}");
        assert!(
            fragment.windows(2).all(|p| p[1] > p[0]),
            "in order: {sent:?}"
        );
    }
}
