//! The archived-media APIs (ListFragments, GetMediaForFragmentList) and the control plane's
//! stream catalogue (DescribeStream, ListStreams) over real sockets: through the Rust SDK, with
//! raw HTTP where the bytes on the wire are the point, and through the AWS CLI, a client nobody
//! here wrote.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_kinesisvideo::types::{ApiName, ComparisonOperator, StreamNameCondition};
use aws_sdk_kinesisvideoarchivedmedia::config::retry::RetryConfig;
use aws_sdk_kinesisvideoarchivedmedia::config::{
    BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig,
};
use aws_sdk_kinesisvideoarchivedmedia::error::ProvideErrorMetadata;
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    Fragment, FragmentSelector, FragmentSelectorType, TimestampRange,
};
use kvs_emu::{
    ACCESS_KEY, BodyEnd, Config, Emulator, FragmentFault, Live, Plane, SECRET_KEY, StoredFragment,
    Stream, SyntheticSpec, synthetic,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fragments(count: usize) -> Vec<StoredFragment> {
    synthetic(&SyntheticSpec {
        fragments: count,
        frames_per_fragment: 2,
        ..SyntheticSpec::default()
    })
}

fn archive(name: &str, count: usize) -> Stream {
    Stream {
        idle_close: Duration::from_millis(100),
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

fn credentials() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test")
}

fn control(endpoint: &str) -> aws_sdk_kinesisvideo::Client {
    let conf = aws_sdk_kinesisvideo::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_kinesisvideo::Client::from_conf(conf)
}

fn archived(endpoint: &str) -> aws_sdk_kinesisvideoarchivedmedia::Client {
    let conf = aws_sdk_kinesisvideoarchivedmedia::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(conf)
}

fn selector(kind: FragmentSelectorType, start_ms: i64, end_ms: i64) -> FragmentSelector {
    FragmentSelector::builder()
        .fragment_selector_type(kind)
        .timestamp_range(
            TimestampRange::builder()
                .start_timestamp(DateTime::from_millis(start_ms))
                .end_timestamp(DateTime::from_millis(end_ms))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// Every fragment the paginator yields, pages of `page_size`.
async fn list_all(
    client: &aws_sdk_kinesisvideoarchivedmedia::Client,
    stream: &str,
    selector: FragmentSelector,
    page_size: i64,
) -> Vec<Fragment> {
    client
        .list_fragments()
        .stream_name(stream)
        .fragment_selector(selector)
        .into_paginator()
        .page_size(page_size)
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap()
}

/// Epoch milliseconds of an SDK timestamp, rounded (it came through an f64, kvs-protocol.md §7.3).
fn millis(t: Option<&DateTime>) -> i64 {
    let t = t.unwrap();
    t.secs() * 1000 + (i64::from(t.subsec_nanos()) + 500_000) / 1_000_000
}

fn numbers(fragments: &[Fragment]) -> Vec<String> {
    fragments
        .iter()
        .map(|f| f.fragment_number().unwrap().to_owned())
        .collect()
}

fn stored_numbers(fragments: &[StoredFragment]) -> Vec<String> {
    fragments.iter().map(|f| f.number().to_owned()).collect()
}

/// What a client's parser makes of a GetMediaForFragmentList body.
#[derive(Debug, Default)]
struct Parsed {
    /// FRAGMENT_NUMBER of every chunk that started a fragment, in body order.
    started: Vec<String>,
    /// Every fragment that ended, with the tags it ended with.
    ended: Vec<mkv::Fragment>,
    errors: Vec<mkv::ServiceError>,
    /// `Ok` fragment numbers and `Err` error-chunk numbers, in body order.
    sequence: Vec<Result<String, String>>,
    blocks: usize,
    finish: Option<mkv::Finish>,
}

fn parse(body: &[u8]) -> Parsed {
    let mut parser = mkv::Parser::new();
    parser.push(body);
    let mut parsed = Parsed::default();
    while let Some(event) = parser.next_event().unwrap() {
        match event {
            mkv::Event::FragmentStart(f) => {
                parsed.sequence.push(Ok(f.number.clone()));
                parsed.started.push(f.number);
            }
            mkv::Event::FragmentEnd(f) => parsed.ended.push(f),
            mkv::Event::ServiceError(e) => {
                parsed
                    .sequence
                    .push(Err(e.fragment_number.clone().unwrap_or_default()));
                parsed.errors.push(e);
            }
            mkv::Event::BlockStart(_) => parsed.blocks += 1,
            _ => {}
        }
    }
    parsed.finish = Some(parser.finish().unwrap());
    parsed
}

/// A GetMediaForFragmentList body ends cleanly after its last chunk, which has no closing tags:
/// a parser that ends fragments on those tags alone reports it as cut off, one that ends them at
/// a clean end of body does not. Either is fine here; a cut elsewhere is not.
fn assert_ends_after(parsed: &Parsed, last: Option<&str>) {
    let finish = parsed.finish.clone().unwrap();
    let cut_last = mkv::Finish::Truncated {
        fragment: last.map(str::to_owned),
    };
    assert!(
        finish == mkv::Finish::Clean || (last.is_some() && finish == cut_last),
        "{finish:?}"
    );
}

async fn read_all(
    out: aws_sdk_kinesisvideoarchivedmedia::operation::get_media_for_fragment_list::GetMediaForFragmentListOutput,
) -> Vec<u8> {
    out.payload.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn list_fragments_pages_through_every_fragment_once() {
    let stream = archive("cam1", 230);
    let stored = stream.fragments.clone();
    let emulator = start(vec![stream]);

    let endpoint = control(&emulator.endpoint())
        .get_data_endpoint()
        .stream_name("cam1")
        .api_name(ApiName::ListFragments)
        .send()
        .await
        .unwrap();
    let client = archived(endpoint.data_endpoint().unwrap());

    let (first, last) = (&stored[0], &stored[229]);
    let all = list_all(
        &client,
        "cam1",
        selector(
            FragmentSelectorType::ServerTimestamp,
            first.server_ms(),
            last.server_ms(),
        ),
        17,
    )
    .await;
    let listed = numbers(&all);
    assert_eq!(listed.len(), 230);
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), 230, "a fragment was listed twice");
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| kvs_emu::cmp_fragment_numbers(a, b));
    assert_eq!(sorted, stored_numbers(&stored));
    // Unordered within and across pages, as the service says.
    assert_ne!(listed, sorted);
    assert_ne!(listed[..17], sorted[..17]);

    // Every field as stored; timestamps survive the Java-double notation to the millisecond.
    for f in &all {
        let s = stored
            .iter()
            .find(|s| s.number() == f.fragment_number().unwrap())
            .unwrap();
        assert_eq!(millis(f.server_timestamp()), s.server_ms());
        assert_eq!(millis(f.producer_timestamp()), s.producer_ms());
        assert_eq!(f.fragment_length_in_milliseconds(), s.duration_ms() as i64);
        assert_eq!(f.fragment_size_in_bytes(), s.archived_size() as i64);
    }

    // The producer clock, a range that starts inside fragment 10 and ends on fragment 20's
    // start: 11 to 20, both ends inclusive on fragment starts.
    let part = list_all(
        &client,
        "cam1",
        selector(
            FragmentSelectorType::ProducerTimestamp,
            stored[10].producer_ms() + 1,
            stored[20].producer_ms(),
        ),
        1000,
    )
    .await;
    let part: BTreeSet<String> = numbers(&part).into_iter().collect();
    let expected: BTreeSet<String> = stored_numbers(&stored[11..=20]).into_iter().collect();
    assert_eq!(part, expected);
    // The server clock is 150 ms later: the same range there starts at fragment 10.
    let server = list_all(
        &client,
        "cam1",
        selector(
            FragmentSelectorType::ServerTimestamp,
            stored[10].producer_ms() + 1,
            stored[20].producer_ms(),
        ),
        1000,
    )
    .await;
    let server: BTreeSet<String> = numbers(&server).into_iter().collect();
    let expected: BTreeSet<String> = stored_numbers(&stored[10..20]).into_iter().collect();
    assert_eq!(server, expected);

    let log = emulator.requests();
    assert_eq!(log[0].operation, "GetDataEndpoint");
    assert_eq!(log[0].body["APIName"], "LIST_FRAGMENTS");
    let pages: Vec<_> = log
        .iter()
        .filter(|r| r.operation == "ListFragments")
        .collect();
    assert_eq!(pages.len(), 230usize.div_ceil(17) + 2);
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.plane, Plane::Data);
        assert_eq!(page.status, 200);
        assert_eq!(page.stream.as_deref(), Some("cam1"));
        assert_eq!(page.call_index, Some(i));
        assert_eq!(page.access_key.as_deref(), Some(ACCESS_KEY));
    }
    // The paginator re-sends the selector with the token.
    assert!(pages[1].body["NextToken"].is_string());
    assert!(pages[1].body["FragmentSelector"].is_object());
}

#[tokio::test]
async fn get_media_for_fragment_list_sends_the_chunks_asked_for() {
    let stream = archive("cam1", 12);
    let stored = stream.fragments.clone();
    let emulator = start(vec![stream]);
    let client = archived(&emulator.data_endpoint());

    let order = [5, 2, 9, 2];
    let asked: Vec<String> = order
        .iter()
        .map(|&i| stored[i].number().to_owned())
        .collect();
    let out = client
        .get_media_for_fragment_list()
        .stream_name("cam1")
        .set_fragments(Some(asked.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.content_type(), Some("video/webm"));
    let body = read_all(out).await;
    let parsed = parse(&body);
    assert_eq!(parsed.started, asked);
    assert!(parsed.errors.is_empty());
    assert_eq!(parsed.blocks, 4 * 2);
    // No closing tags: no MILLIS_BEHIND_NOW, no CONTINUATION_TOKEN.
    for fragment in &parsed.ended {
        assert_eq!(fragment.millis_behind_now, None);
        assert_eq!(fragment.continuation_token, None);
    }
    assert!(parsed.ended.len() >= 3);
    assert_ends_after(&parsed, asked.last().map(String::as_str));
    // The timestamps the tags carry, and the bytes ListFragments announced.
    for (fragment, &i) in parsed.ended.iter().zip(&order) {
        assert_eq!(fragment.server_ms, stored[i].server_ms());
        assert_eq!(fragment.producer_ms, stored[i].producer_ms());
    }
    let size: u64 = order.iter().map(|&i| stored[i].archived_size()).sum();
    assert_eq!(body.len() as u64, size);

    let log = emulator.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].operation, "GetMediaForFragmentList");
    assert_eq!(log[0].fragments_sent, 4);
    assert_eq!(log[0].bytes_sent, size);
    assert_eq!(log[0].body_end, Some(BodyEnd::Complete));
}

#[tokio::test]
async fn missing_fragments_answer_in_band_and_the_body_goes_on() {
    let stream = Stream {
        fragment_faults: vec![
            FragmentFault::NotFoundFirst {
                fragment: 1,
                times: 2,
            },
            FragmentFault::Lost { fragment: 3 },
        ],
        ..archive("cam1", 5)
    };
    let n = stored_numbers(&stream.fragments);
    let emulator = start(vec![stream]);
    let client = archived(&emulator.data_endpoint());
    let never = "1234567".to_owned();
    let asked = vec![
        n[0].clone(),
        n[1].clone(),
        never.clone(),
        n[3].clone(),
        n[4].clone(),
    ];
    let mut sequences = Vec::new();
    for _ in 0..3 {
        let out = client
            .get_media_for_fragment_list()
            .stream_name("cam1")
            .set_fragments(Some(asked.clone()))
            .send()
            .await
            .unwrap();
        let parsed = parse(&read_all(out).await);
        for error in &parsed.errors {
            assert_eq!(error.id, Some(3000));
            assert_eq!(error.code.as_deref(), Some("FRAGMENT_NOT_FOUND"));
        }
        assert_ends_after(&parsed, Some(&n[4]));
        sequences.push(parsed.sequence);
    }
    let not_yet = vec![
        Ok(n[0].clone()),
        Err(n[1].clone()),
        Err(never.clone()),
        Err(n[3].clone()),
        Ok(n[4].clone()),
    ];
    let retried = vec![
        Ok(n[0].clone()),
        Ok(n[1].clone()),
        Err(never),
        Err(n[3].clone()),
        Ok(n[4].clone()),
    ];
    assert_eq!(sequences, [not_yet.clone(), not_yet, retried]);
    // Listed all the same: a fragment the service lists but cannot serve.
    let listed = client
        .list_fragments()
        .stream_name("cam1")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.fragments().len(), 5);
    assert_eq!(listed.next_token(), None);
    assert_eq!(emulator.requests()[0].fragments_sent, 2);
}

#[tokio::test]
async fn fragments_become_visible_late_and_expire() {
    let live = Stream {
        visibility_delay: Duration::from_millis(400),
        ..Stream::live("live", fragments(3), 1.0)
    };
    let live = Stream {
        live: Some(Live {
            speed: 1.0,
            backlog: 1,
        }),
        ..live
    };
    let live_numbers = stored_numbers(&live.fragments);
    let kept = Stream {
        retention_ms: Some(5000),
        ..archive("kept", 5)
    };
    let kept_numbers = stored_numbers(&kept.fragments);
    let emulator = start(vec![live, kept]);
    let client = archived(&emulator.data_endpoint());
    let list = |stream: &'static str| {
        let client = client.clone();
        async move {
            let out = client
                .list_fragments()
                .stream_name(stream)
                .max_results(1000)
                .send()
                .await
                .unwrap();
            let mut listed = numbers(out.fragments());
            listed.sort();
            listed
        }
    };
    let gmffl = |stream: &'static str, number: String| {
        let client = client.clone();
        async move {
            let out = client
                .get_media_for_fragment_list()
                .stream_name(stream)
                .fragments(number)
                .send()
                .await
                .unwrap();
            parse(&read_all(out).await).sequence
        }
    };
    // The backlog fragment is listed at once; fragment 1 arrived at the start but is not
    // visible for 400 ms.
    assert_eq!(list("live").await, live_numbers[..1]);
    assert_eq!(
        gmffl("live", live_numbers[1].clone()).await,
        [Err(live_numbers[1].clone())]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(list("live").await, live_numbers[..2]);
    assert_eq!(
        gmffl("live", live_numbers[1].clone()).await,
        [Ok(live_numbers[1].clone())]
    );

    // Retention keeps the last two of five 2 s fragments; the others are neither listed nor
    // served.
    assert_eq!(list("kept").await, kept_numbers[3..]);
    assert_eq!(
        gmffl("kept", kept_numbers[0].clone()).await,
        [Err(kept_numbers[0].clone())]
    );
}

#[tokio::test]
async fn the_archived_media_limits_are_enforced() {
    let limited = Stream {
        enforce_limits: true,
        ..archive("limited", 3)
    };
    // Slow bodies, so that they stay open: fragments of 20 kB at 10 kB/s take 2 s each.
    let slow_fragments = || {
        synthetic(&SyntheticSpec {
            fragments: 4,
            target_fragment_bytes: Some(20_000),
            ..SyntheticSpec::default()
        })
    };
    let slow = Stream {
        enforce_limits: true,
        bandwidth: Some(10_000),
        ..Stream::archive("slow", slow_fragments())
    };
    let held = Stream {
        held_connections: 4,
        bandwidth: Some(10_000),
        ..Stream::archive("held", slow_fragments())
    };
    let numbers_of = |s: &Stream| stored_numbers(&s.fragments);
    let (slow_numbers, held_numbers) = (numbers_of(&slow), numbers_of(&held));
    let emulator = start(vec![limited, slow, held]);
    let client = archived(&emulator.data_endpoint());

    // 5 ListFragments calls per second.
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        let result = client.list_fragments().stream_name("limited").send().await;
        outcomes.push(match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => {
                let e = e.into_service_error();
                assert!(e.is_client_limit_exceeded_exception());
                e.code().unwrap().to_owned()
            }
        });
    }
    assert_eq!(
        outcomes,
        ["ok", "ok", "ok", "ok", "ok", "ClientLimitExceededException"]
    );
    assert_eq!(
        emulator.requests()[5]
            .error_type
            .as_deref()
            .unwrap_or_default(),
        "ClientLimitExceededException"
    );

    // More than 1000 fragments in one call.
    let too_many = client
        .get_media_for_fragment_list()
        .stream_name("limited")
        .set_fragments(Some(vec!["1".to_owned(); 1001]))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(too_many.is_invalid_argument_exception(), "{too_many:?}");
    assert!(too_many.message().unwrap().contains("1000"));

    // 5 open bodies per stream; the sixth call (made after a second, not to be throttled) is
    // refused, and a body the client drops frees its slot.
    let call = |stream: &'static str, number: String| {
        let client = client.clone();
        async move {
            client
                .get_media_for_fragment_list()
                .stream_name(stream)
                .fragments(number)
                .send()
                .await
        }
    };
    let mut open = Vec::new();
    for number in slow_numbers.iter().cycle().take(5) {
        open.push(call("slow", number.clone()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let refused = call("slow", slow_numbers[0].clone()).await.unwrap_err();
    assert_eq!(refused.code(), Some("ConnectionLimitExceededException"));
    assert_eq!(refused.raw_response().unwrap().status().as_u16(), 400);
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admitted = call("slow", slow_numbers[0].clone()).await.unwrap();
    drop(admitted);
    drop(open);

    // Another consumer holds 4 of the 5 connections: one is left, even with the limits off.
    let only = call("held", held_numbers[0].clone()).await.unwrap();
    let refused = call("held", held_numbers[1].clone()).await.unwrap_err();
    assert_eq!(refused.code(), Some("ConnectionLimitExceededException"));
    drop(only);
}

#[tokio::test]
async fn the_bandwidth_cap_paces_both_media_apis() {
    let spec = SyntheticSpec {
        fragments: 4,
        target_fragment_bytes: Some(25_000),
        ..SyntheticSpec::default()
    };
    let stream = Stream {
        bandwidth: Some(200_000),
        idle_close: Duration::from_millis(50),
        ..Stream::archive("capped", synthetic(&spec))
    };
    let stored = stream.fragments.clone();
    let emulator = start(vec![stream]);

    let size: u64 = stored.iter().map(StoredFragment::archived_size).sum();
    assert!(size >= 100_000, "{size}");
    // The first 50 ms piece leaves at once; the rest at 200 kB/s.
    let least = Duration::from_secs_f64((size - 10_000) as f64 / 200_000.0);
    let client = archived(&emulator.data_endpoint());
    let began = Instant::now();
    let out = client
        .get_media_for_fragment_list()
        .stream_name("capped")
        .set_fragments(Some(stored_numbers(&stored)))
        .send()
        .await
        .unwrap();
    let body = read_all(out).await;
    let took = began.elapsed();
    assert_eq!(body.len() as u64, size);
    assert!(took >= least, "{took:?} < {least:?}");
    assert!(took < least + Duration::from_secs(2), "{took:?}");

    let media = aws_sdk_kinesisvideomedia::Client::from_conf(
        aws_sdk_kinesisvideomedia::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-west-2"))
            .credentials_provider(credentials())
            .endpoint_url(emulator.data_endpoint())
            .stalled_stream_protection(
                aws_sdk_kinesisvideomedia::config::StalledStreamProtectionConfig::disabled(),
            )
            .build(),
    );
    let began = Instant::now();
    let out = media
        .get_media()
        .stream_name("capped")
        .start_selector(
            aws_sdk_kinesisvideomedia::types::StartSelector::builder()
                .start_selector_type(aws_sdk_kinesisvideomedia::types::StartSelectorType::Earliest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let body = out.payload.collect().await.unwrap().into_bytes();
    assert!(body.len() as u64 > size);
    assert!(began.elapsed() >= least, "{:?}", began.elapsed());
}

#[tokio::test]
async fn streams_are_described_and_listed() {
    let mut streams = Vec::new();
    for name in ["cam-b", "cam-a", "door", "cam-c"] {
        streams.push(archive(name, 1));
    }
    streams[0].retention_ms = Some(48 * 3_600_000);
    streams[0].media_type = "video/h265".into();
    let arn = streams[0].arn();
    let emulator = start(streams);
    let client = control(&emulator.endpoint());

    let info = client
        .describe_stream()
        .stream_name("cam-b")
        .send()
        .await
        .unwrap();
    let info = info.stream_info().unwrap();
    assert_eq!(info.stream_name(), Some("cam-b"));
    assert_eq!(info.stream_arn(), Some(arn.as_str()));
    assert_eq!(
        info.status(),
        Some(&aws_sdk_kinesisvideo::types::Status::Active)
    );
    assert_eq!(
        info.creation_time().unwrap().to_millis().unwrap(),
        1_700_000_000_000
    );
    assert_eq!(info.data_retention_in_hours(), Some(48));
    assert_eq!(info.media_type(), Some("video/h265"));
    assert!(info.kms_key_id().is_some());
    assert!(info.version().is_some());
    assert!(info.device_name().is_some());
    let by_arn = client
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(by_arn.stream_info().unwrap().stream_name(), Some("cam-b"));

    let missing = client
        .describe_stream()
        .stream_name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.raw_response().unwrap().status().as_u16(), 404);
    assert!(
        missing
            .into_service_error()
            .is_resource_not_found_exception()
    );

    let names = |condition: Option<&str>, page: i32| {
        let client = client.clone();
        let condition = condition.map(|prefix| {
            StreamNameCondition::builder()
                .comparison_operator(ComparisonOperator::BeginsWith)
                .comparison_value(prefix)
                .build()
        });
        async move {
            client
                .list_streams()
                .set_stream_name_condition(condition)
                .into_paginator()
                .page_size(page)
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .unwrap()
                .iter()
                .map(|s| s.stream_name().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names(Some("cam-"), 2).await, ["cam-a", "cam-b", "cam-c"]);
    assert_eq!(names(None, 1).await, ["cam-a", "cam-b", "cam-c", "door"]);
    assert_eq!(names(Some("x"), 10).await, Vec::<String>::new());
    let log = emulator.requests();
    let list_calls = log.iter().filter(|r| r.operation == "ListStreams").count();
    assert_eq!(list_calls, 2 + 4 + 1);
    assert!(log.iter().all(|r| r.plane == Plane::Control));
    assert!(
        log.iter()
            .filter(|r| r.status == 200)
            .all(|r| r.access_key.is_some())
    );
}

struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One unsigned POST, the answer read to its end (de-chunked).
async fn raw_post(endpoint: &str, path: &str, body: &str) -> Raw {
    let host = endpoint.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    socket.read_to_end(&mut bytes).await.unwrap();
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
        };
    }
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
    Raw {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn the_wire_format_matches_the_service() {
    let stream = Stream {
        shuffle_listings: false,
        ..archive("cam1", 5)
    };
    let stored = stream.fragments.clone();
    let mut spec = SyntheticSpec {
        fragments: 1,
        ..SyntheticSpec::default()
    };
    spec.ingest.fragment_number_base = 1_000_000_000_000;
    let other = Stream::archive("other", synthetic(&spec));
    let foreign = other.fragments[0].number().to_owned();
    let emulator = Emulator::start(Config {
        verify_signatures: false,
        streams: vec![stream, other],
        ..Config::default()
    })
    .unwrap();
    let data = emulator.data_endpoint();

    // Java-double timestamps, as the service writes them; no NextToken on the last page.
    let page = raw_post(
        &data,
        "/listFragments",
        r#"{"StreamName":"cam1","MaxResults":2}"#,
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("application/json"));
    assert!(page.header("x-amzn-requestid").is_some());
    let text = page.text();
    assert!(text.contains(r#""ProducerTimestamp":1.7E9,"#), "{text}");
    assert!(
        text.contains(r#""ServerTimestamp":1.70000000015E9,"#),
        "{text}"
    );
    // Paging as AWS's Java worker does: only the stream and the token on later pages.
    let mut listed = Vec::new();
    let mut json = page.json();
    loop {
        for f in json["Fragments"].as_array().unwrap() {
            listed.push(f["FragmentNumber"].as_str().unwrap().to_owned());
        }
        let Some(token) = json.get("NextToken").and_then(Value::as_str) else {
            break;
        };
        assert!(!token.is_empty());
        let next = format!(r#"{{"StreamName":"cam1","MaxResults":2,"NextToken":"{token}"}}"#);
        json = raw_post(&data, "/listFragments", &next).await.json();
    }
    // Shuffling is off for this stream: ingestion order.
    assert_eq!(listed, stored_numbers(&stored));

    // A body of chunks: the first is GetMedia's chunk without its closing tags.
    let numbers = format!(r#"["{}","{}"]"#, stored[0].number(), stored[1].number());
    let body = raw_post(
        &data,
        "/getMediaForFragmentList",
        &format!(r#"{{"StreamName":"cam1","Fragments":{numbers}}}"#),
    )
    .await;
    assert_eq!(body.status, 200);
    assert_eq!(body.header("content-type"), Some("video/webm"));
    assert_eq!(body.header("transfer-encoding"), Some("chunked"));
    let first = stored[0].chunk(0);
    let archived_len = stored[0].archived_size() as usize;
    assert_eq!(body.body[..archived_len], first[..archived_len]);
    assert!(first.len() > archived_len);

    // Errors in the AWS shape.
    let checks = [
        (
            &data,
            "/listFragments",
            r#"{"StreamName":"nope"}"#,
            404,
            "ResourceNotFoundException",
        ),
        (
            &data,
            "/listFragments",
            r#"{"StreamName":"cam1","MaxResults":0}"#,
            400,
            "InvalidArgumentException",
        ),
        (
            &data,
            "/listFragments",
            r#"{"StreamName":"cam1","NextToken":"abcd"}"#,
            400,
            "InvalidArgumentException",
        ),
        (
            &data,
            "/listFragments",
            r#"{"StreamName":"cam1","FragmentSelector":{"FragmentSelectorType":"SERVER_TIMESTAMP"}}"#,
            400,
            "InvalidArgumentException",
        ),
        (
            &data,
            "/getMediaForFragmentList",
            r#"{"StreamName":"cam1"}"#,
            400,
            "InvalidArgumentException",
        ),
        (
            &data,
            "/getMediaForFragmentList",
            r#"{"StreamName":"cam1","Fragments":[]}"#,
            400,
            "InvalidArgumentException",
        ),
        (
            &data,
            "/getMediaForFragmentList",
            r#"[1]"#,
            400,
            "InvalidArgumentException",
        ),
        (
            &data,
            "/describeStream",
            r#"{"StreamName":"cam1"}"#,
            400,
            "InvalidEndpointException",
        ),
    ];
    let control_endpoint = emulator.endpoint();
    let more = [
        (
            &control_endpoint,
            "/listFragments",
            r#"{"StreamName":"cam1"}"#,
            400,
            "InvalidEndpointException",
        ),
        (
            &control_endpoint,
            "/describeStream",
            r#"{"StreamName":"nope"}"#,
            404,
            "ResourceNotFoundException",
        ),
        (
            &control_endpoint,
            "/listStreams",
            r#"{"MaxResults":0}"#,
            400,
            "InvalidArgumentException",
        ),
        (
            &control_endpoint,
            "/listStreams",
            r#"{"StreamNameCondition":{"ComparisonOperator":"ENDS_WITH","ComparisonValue":"x"}}"#,
            400,
            "InvalidArgumentException",
        ),
    ];
    for (endpoint, path, request, status, kind) in checks.into_iter().chain(more) {
        let answer = raw_post(endpoint, path, request).await;
        assert_eq!(answer.status, status, "{path} {request}: {}", answer.text());
        assert_eq!(
            answer.header("x-amzn-errortype"),
            Some(kind),
            "{path} {request}"
        );
        assert!(answer.json()["Message"].is_string());
    }

    // Another stream's fragment number: the request is refused, not answered in-band.
    let request = format!(r#"{{"StreamName":"cam1","Fragments":["{foreign}"]}}"#);
    let refused = raw_post(&data, "/getMediaForFragmentList", &request).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.header("x-amzn-errortype"),
        Some("InvalidArgumentException")
    );
    assert!(
        refused.json()["Message"]
            .as_str()
            .unwrap()
            .starts_with("Fragment numbers are invalid :")
    );

    // DescribeStream's CreationTime is a Java double too.
    let described = raw_post(
        &control_endpoint,
        "/describeStream",
        r#"{"StreamName":"cam1"}"#,
    )
    .await;
    assert!(
        described.text().contains(r#""CreationTime":1.7E9"#),
        "{}",
        described.text()
    );
}

#[tokio::test]
async fn unsigned_archived_media_requests_are_refused() {
    let emulator = start(vec![archive("cam1", 1)]);
    for (endpoint, path) in [
        (emulator.data_endpoint(), "/listFragments"),
        (emulator.data_endpoint(), "/getMediaForFragmentList"),
        (emulator.endpoint(), "/describeStream"),
        (emulator.endpoint(), "/listStreams"),
    ] {
        let answer = raw_post(&endpoint, path, r#"{"StreamName":"cam1"}"#).await;
        assert_eq!(answer.status, 403, "{path}");
        assert_eq!(
            answer.header("x-amzn-errortype"),
            Some("MissingAuthenticationTokenException")
        );
    }
    let log = emulator.requests();
    let operations: Vec<&str> = log.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        operations,
        [
            "ListFragments",
            "GetMediaForFragmentList",
            "DescribeStream",
            "ListStreams"
        ]
    );
}

/// The AWS CLI on `PATH`, or why the test cannot use one: skipped on a developer machine without
/// it, a failure under CI (where `CI` is set), which must have it.
fn aws_cli() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("aws"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the AWS CLI (`aws`) is not on PATH; install it: python3 -m pip install awscli"
        );
        eprintln!("skipped: the AWS CLI (`aws`) is not on PATH");
    }
    found
}

/// Runs `aws ARGS` with the emulator's key and nothing from the user's own AWS setup; returns
/// stdout, having checked the exit code.
fn aws(cli: &std::path::Path, home: &std::path::Path, args: &[&str]) -> String {
    let mut command = std::process::Command::new(cli);
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        command.env_remove(var);
    }
    let output = command
        .args(args)
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "aws {args:?}: {:?}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_aws_cli_reads_an_archived_range() {
    let Some(cli) = aws_cli() else {
        return;
    };
    let stream = archive("cam1", 40);
    let stored = stream.fragments.clone();
    let emulator = start(vec![stream, archive("door", 1)]);
    let home = tempfile::tempdir().unwrap();
    let control = emulator.endpoint();
    let json = |text: String| -> Value { serde_json::from_str(&text).unwrap() };

    let described = json(aws(
        &cli,
        home.path(),
        &[
            "--endpoint-url",
            &control,
            "kinesisvideo",
            "describe-stream",
            "--stream-name",
            "cam1",
        ],
    ));
    assert_eq!(described["StreamInfo"]["StreamName"], "cam1");
    assert_eq!(described["StreamInfo"]["Status"], "ACTIVE");
    let listed_streams = json(aws(
        &cli,
        home.path(),
        &[
            "--endpoint-url",
            &control,
            "kinesisvideo",
            "list-streams",
            "--stream-name-condition",
            "ComparisonOperator=BEGINS_WITH,ComparisonValue=ca",
        ],
    ));
    let names: Vec<&str> = listed_streams["StreamInfoList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["StreamName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cam1"]);

    let endpoint = json(aws(
        &cli,
        home.path(),
        &[
            "--endpoint-url",
            &control,
            "kinesisvideo",
            "get-data-endpoint",
            "--stream-name",
            "cam1",
            "--api-name",
            "LIST_FRAGMENTS",
        ],
    ));
    let data = endpoint["DataEndpoint"].as_str().unwrap().to_owned();
    assert_eq!(data, emulator.data_endpoint());

    // Fragments 5 to 34 by server time, seven to a page: the CLI pages on its own. botocore
    // sends timestamps in whole seconds (it drops the fraction), so the range is in whole
    // seconds around the fragments' starts (which are at .150).
    let selector = format!(
        r#"{{"FragmentSelectorType":"SERVER_TIMESTAMP","TimestampRange":{{"StartTimestamp":{},"EndTimestamp":{}}}}}"#,
        stored[5].server_ms().div_euclid(1000),
        stored[34].server_ms().div_euclid(1000) + 1,
    );
    let listed = json(aws(
        &cli,
        home.path(),
        &[
            "--endpoint-url",
            &data,
            "kinesis-video-archived-media",
            "list-fragments",
            "--stream-name",
            "cam1",
            "--fragment-selector",
            &selector,
            "--page-size",
            "7",
        ],
    ));
    let mut numbers: Vec<String> = listed["Fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FragmentNumber"].as_str().unwrap().to_owned())
        .collect();
    numbers.sort_by(|a, b| kvs_emu::cmp_fragment_numbers(a, b));
    assert_eq!(numbers, stored_numbers(&stored[5..=34]));
    for f in listed["Fragments"].as_array().unwrap() {
        let size = f["FragmentSizeInBytes"].as_u64().unwrap();
        assert!(stored.iter().any(|s| s.archived_size() == size));
    }

    let out = home.path().join("range.webm");
    // The outfile goes first: the `--fragments` list would take it for a number.
    let mut args = vec![
        "--endpoint-url",
        &data,
        "kinesis-video-archived-media",
        "get-media-for-fragment-list",
        out.to_str().unwrap(),
        "--stream-name",
        "cam1",
        "--fragments",
    ];
    args.extend(numbers[..10].iter().map(String::as_str));
    let answer = json(aws(&cli, home.path(), &args));
    assert_eq!(answer["ContentType"], "video/webm");
    let body = std::fs::read(&out).unwrap();
    let parsed = parse(&body);
    assert_eq!(parsed.started, numbers[..10]);
    assert!(parsed.errors.is_empty());
    assert_ends_after(&parsed, Some(&numbers[9]));
    let size: u64 = stored[5..15]
        .iter()
        .map(StoredFragment::archived_size)
        .sum();
    assert_eq!(body.len() as u64, size);

    // Every CLI request was signed with the emulator's key and answered.
    let log = emulator.requests();
    // DescribeStream, ListStreams, GetDataEndpoint, the pages, GetMediaForFragmentList.
    assert_eq!(log.len(), 3 + 30usize.div_ceil(7) + 1);
    for request in &log {
        assert_eq!(request.status, 200, "{request:?}");
        assert_eq!(request.access_key.as_deref(), Some(ACCESS_KEY));
    }
    let pages = log
        .iter()
        .filter(|r| r.operation == "ListFragments")
        .count();
    assert_eq!(pages, 30usize.div_ceil(7));
}
