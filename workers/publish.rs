//! proctor-publish: drains the outbox of signed slash events to ledger.slashes.
//! See `proctor::pipeline::publish` and docs/ARCHITECTURE.md.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    proctor::pipeline::main("publish", proctor::pipeline::publish::run).await
}
