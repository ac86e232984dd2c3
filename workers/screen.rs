//! proctor-screen: consumes proctor.jobs, runs the checks that need no reference run,
//! records verdicts, and requests re-runs of sampled jobs.
//! See `proctor::pipeline::screen` and docs/ARCHITECTURE.md.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    proctor::pipeline::main("screen", proctor::pipeline::screen::run).await
}
