//! Acceptance 3: PostgreSQL goes away mid-run and comes back; the store retries
//! and nothing is lost or doubled. Two ways, neither touching the shared server:
//! a TCP proxy between store and PostgreSQL that the test cuts (connections reset,
//! new ones refused, as during a restart), and `pg_terminate_backend` on the
//! store's connections (what a server restart does to them).

use crate::support::*;
use bandsync_testkit::{NatsServer, eventually, http_get};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards TCP to PostgreSQL until cut; while cut, drops every connection.
struct Proxy {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = watch::channel(false);
        let cut_rx = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = cut_rx.clone();
                if *rx.borrow() {
                    continue; // dropped at once: the client sees the connection closed
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_rides_out_a_postgres_outage() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name);
    let (store, token) = start_store(&nats, &via_proxy).await;

    let events = bulk_events("o", 20, 500);
    let total = events.len() as i64;
    let js = bus.js.clone();
    // Paced: about 2,500 events/s for 4 s, so the outage falls mid-stream.
    let publisher = tokio::spawn(async move {
        for chunk in events.chunks(250) {
            publish_all(&js, chunk.to_vec()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.set_cut(true);
    let ready = format!("http://{}/readyz", store.addr());
    let read = |series: &'static str| store_metric(&store, series);
    eventually(
        Duration::from_secs(5),
        "readyz reports postgres down",
        || async {
            http_get(&ready)
                .await
                .is_ok_and(|r| r.status == 503 && r.body.contains("postgres: down"))
        },
    )
    .await;
    assert_eq!(read("bandsync_store_db_up").await, 0.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = db.count("SELECT count(*) FROM events").await;
    proxy.set_cut(false);

    publisher.await.expect("publisher");
    eventually(Duration::from_secs(60), "all events stored", || async {
        db.count("SELECT count(*) FROM events").await == total
    })
    .await;
    assert!(
        during < total,
        "the outage fell mid-stream ({during} of {total})"
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT stream_seq) FROM events")
            .await,
        total
    );
    assert_eq!(db.count("SELECT max(stream_seq) FROM events").await, total);
    // Every batch the outage failed was retried: errors counted, nothing lost,
    // nothing dead-lettered. (A commit whose answer the cut lost is retried
    // and counted a duplicate, hence "at most" and "at least".)
    assert!(read("bandsync_store_write_errors_total{stream=\"events\"}").await >= 1.0);
    assert!(read("bandsync_store_rows_inserted_total{stream=\"events\"}").await <= total as f64);
    assert!(read("bandsync_store_messages_total{stream=\"events\"}").await >= total as f64);
    assert_events_clean(&store).await;
    let r = http_get(&ready).await.expect("GET /readyz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(read("bandsync_store_db_up").await, 1.0);
    token.cancel();
    store.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_survives_its_connections_being_terminated() {
    let nats = NatsServer::start().await;
    let db = TestDb::fresh();
    let bus = bus(&nats).await;
    let (store, token) = start_store(&nats, &db.url()).await;
    let events = bulk_events("t", 20, 300);
    let total = events.len() as i64;
    let js = bus.js.clone();
    let publisher = tokio::spawn(async move {
        for chunk in events.chunks(300) {
            publish_all(&js, chunk.to_vec()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let admin = db.client().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("terminate backends");
    }
    publisher.await.expect("publisher");
    eventually(Duration::from_secs(60), "all events stored", || async {
        db.count("SELECT count(*) FROM events").await == total
    })
    .await;
    assert_eq!(
        db.count("SELECT count(DISTINCT stream_seq) FROM events")
            .await,
        total
    );
    let read = |series: &'static str| store_metric(&store, series);
    assert!(read("bandsync_store_messages_total{stream=\"events\"}").await >= total as f64);
    assert_events_clean(&store).await;
    token.cancel();
    store.wait().await;
}
