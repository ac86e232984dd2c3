//! proctor-rerun: consumes proctor.rerun, compares each job with its reference output and
//! records the re-run verdict.
//! See `proctor::pipeline::rerun` and docs/ARCHITECTURE.md.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    proctor::pipeline::main("rerun", proctor::pipeline::rerun::run).await
}
