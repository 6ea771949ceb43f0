//! Fragment sources: where the download loop's fragments come from. A GetMedia session is
//! driven by the loop itself (`download`); a planned archived range is fetched here, over
//! parallel GetMediaForFragmentList connections, and handed to the loop batch by batch in
//! stream order.

pub mod archive;
