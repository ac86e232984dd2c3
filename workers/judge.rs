//! proctor-judge: decides on every miner whose evidence changed: a slash with its
//! outbox event, or a review flag.
//! See `proctor::pipeline::judge` and docs/ARCHITECTURE.md.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    proctor::pipeline::main("judge", proctor::pipeline::judge::run).await
}
