//! The raw quinn bulk-copy baseline moves every byte it claims to.

use std::time::Duration;

use fleetcast_tests::raw_quinn_bulk_copy;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_copy_delivers_every_byte_to_every_receiver() {
    // 20 receivers spread over 3 senders; the copy fails unless each got exactly 64 KiB.
    let elapsed = tokio::time::timeout(TIMEOUT, raw_quinn_bulk_copy(20, 64 * 1024, 3))
        .await
        .expect("bulk copy timed out")
        .unwrap();
    assert!(elapsed > Duration::ZERO);
}

#[tokio::test]
async fn bulk_copy_handles_more_senders_than_receivers_and_empty_payloads() {
    tokio::time::timeout(TIMEOUT, raw_quinn_bulk_copy(2, 0, 4))
        .await
        .expect("bulk copy timed out")
        .unwrap();
    let err = raw_quinn_bulk_copy(0, 1, 1).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("at least one receiver"),
        "{err:#}"
    );
}
