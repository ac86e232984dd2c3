//! SASL/SCRAM against the local broker: every client proctor makes (admin, producer,
//! consumer) authenticates with the `kafka.*` security settings, and a client without
//! the right password reads and writes nothing.
//!
//! The broker is a second tansu 0.6 of the services' build, on a port of its own and
//! its SQLite storage engine: of the engines built here only that one stores SCRAM
//! users (the S3 engine's `user_scram_credential` answers "none" for everyone, so no
//! SCRAM login could succeed against the services' own broker). tansu has no TLS
//! listener that works in 0.6, so TLS (`ssl`, `sasl_ssl`, the CA settings) is verified
//! here only as far as the settings librdkafka is handed (`kafka::tests`), and by
//! librdkafka accepting them: a build without OpenSSL refuses SCRAM at client creation.

#[path = "support/scope.rs"]
mod scope;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proctor::kafka;
use proctor::settings::{KafkaSettings, SecurityProtocol, Settings};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;

const USER: &str = "proctor-test";
const PASSWORD: &str = "correct horse battery staple";
const TOPIC: &str = "sasl.test";

/// A tansu broker in `dir`, killed when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(tansu: &str, dir: &Path, port: u16, authentication: bool) -> Broker {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(tansu);
    cmd.current_dir(dir)
        .args(["broker", "--silent", "--cluster-id", "proctor-sasl-test"])
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("tansu.log")).unwrap());
    if authentication {
        cmd.arg("--authentication");
    }
    let broker = Broker(cmd.spawn().expect("start tansu"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("tansu.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker
}

fn settings(port: u16, security: &[(&str, &str)]) -> KafkaSettings {
    let mut env = vec![(
        "PROCTOR_KAFKA__BROKERS".to_owned(),
        format!("127.0.0.1:{port}"),
    )];
    env.push(("PROCTOR_KAFKA__COMPAT".into(), "tansu-0.6".into()));
    env.push(("PROCTOR_KAFKA__IDEMPOTENCE".into(), "false".into()));
    env.push(("PROCTOR_KAFKA__REPLICATION_FACTOR".into(), "1".into()));
    env.push(("PROCTOR_KAFKA__GROUP_ID".into(), "sasl-test".into()));
    for (k, v) in security {
        env.push((format!("PROCTOR_KAFKA__{k}"), (*v).to_owned()));
    }
    Settings::load_from(None, env).expect("settings").kafka
}

fn scram(password: &str) -> [(&'static str, String); 4] {
    [
        ("SECURITY_PROTOCOL", "sasl_plaintext".into()),
        ("SASL_MECHANISM", "SCRAM-SHA-512".into()),
        ("SASL_USERNAME", USER.into()),
        ("SASL_PASSWORD", password.into()),
    ]
}

fn with<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Whether a client with these settings gets the broker's metadata within 8 s.
fn admitted(k: &KafkaSettings) -> bool {
    let c: BaseConsumer<kafka::LogContext> = kafka::client(k)
        .set("group.id", "sasl-probe")
        .create_with_context(kafka::LogContext)
        .unwrap();
    c.fetch_metadata(None, Duration::from_secs(8)).is_ok()
}

/// Tries to produce `payload`; true if the broker acknowledged it within 8 s.
async fn produced(k: &KafkaSettings, payload: &str) -> bool {
    let producer = kafka::producer(k).unwrap();
    let send = producer.send(
        FutureRecord::to(TOPIC).key("m").payload(payload),
        Duration::from_secs(8),
    );
    matches!(
        tokio::time::timeout(Duration::from_secs(10), send).await,
        Ok(Ok(_))
    )
}

/// Every payload of the topic, read with `k` until 3 s pass without a message, and
/// the first error the consumer met.
async fn read_all(k: &KafkaSettings, group: &str) -> (Vec<String>, Option<String>) {
    let mut k = k.clone();
    k.group_id = group.into();
    let consumer = kafka::consumer(&k, "", &[TOPIC], kafka::MAX_POLL_INTERVAL).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The first message can take a while: the group has to form first.
    let mut idle = Duration::from_secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(Ok(m)) => {
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
                idle = Duration::from_secs(3);
            }
            Ok(Err(e)) => return (got, Some(e.to_string())),
            Err(_) => break,
        }
    }
    (got, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_with_the_scram_password_reads_or_writes() {
    let env = support::service_env();
    let tansu = env
        .get("PROCTOR_SERVICES_TANSU")
        .expect("scripts/services.sh env names the tansu binary: run scripts/services.sh up")
        .clone();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();

    // The first user is made while the broker is open (tansu refuses everything but
    // the SASL handshake once --authentication is on), then the broker restarts closed.
    {
        let _open = start(&tansu, dir.path(), port, false);
        let out = Command::new(&tansu)
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{port}"),
            ])
            .args(["--mechanism", "scram512", USER, PASSWORD])
            .output()
            .unwrap();
        assert!(out.status.success(), "tansu user create: {out:?}");
    }
    let _closed = start(&tansu, dir.path(), port, true);

    let good = settings(port, &with(&scram(PASSWORD)));
    kafka::ensure_topics(&good, &[(TOPIC, 1)])
        .await
        .expect("an admin client with the SCRAM password creates the topic");
    assert!(admitted(&good));
    assert!(produced(&good, "from the right password").await);

    // The wrong password, the user's name with no SASL, and PLAIN's way in.
    let wrong = settings(port, &with(&scram("Tr0ub4dor&3")));
    let open = settings(port, &[]);
    for (what, k) in [("a wrong SCRAM password", &wrong), ("no SASL", &open)] {
        assert!(!admitted(k), "{what} was given the broker's metadata");
        assert!(!produced(k, what).await, "{what} produced to the topic");
    }

    let (got, error) = read_all(&good, "sasl-reader").await;
    assert_eq!(error, None);
    assert_eq!(got, ["from the right password"], "what the topic holds");
    let (stolen, _) = read_all(&wrong, "sasl-thief").await;
    assert!(stolen.is_empty(), "a wrong password read {stolen:?}");

    // tansu 0.6 admits no PLAIN login, not even with the SCRAM user's own password
    // (measured here: it keeps no password PLAIN could be checked against), so the
    // local broker verifies SCRAM only. If this fails, tansu checks PLAIN now: say so
    // in docs/OPERATIONS.md.
    let mut plain = settings(
        port,
        &[
            ("SECURITY_PROTOCOL", "sasl_ssl"),
            ("SASL_MECHANISM", "PLAIN"),
            ("SASL_USERNAME", USER),
            ("SASL_PASSWORD", PASSWORD),
        ],
    );
    plain.security_protocol = SecurityProtocol::SaslPlaintext;
    assert!(!admitted(&plain), "tansu admitted a PLAIN login");
}
