//! proctor-review: the staff review app (HTML for reviewers, a JSON API for scripts),
//! the same as `proctor review serve`. See `proctor::web` and docs/ARCHITECTURE.md.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "proctor-review",
    version,
    about = "The staff review app of proctor"
)]
struct Args {
    #[command(flatten)]
    serve: proctor::web::ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    proctor::telemetry::init_logging();
    let args = Args::parse();
    let stop = async {
        let mut stop = proctor::pipeline::Shutdown::on_signals();
        stop.wait().await;
    };
    match proctor::web::run(&args.serve, stop).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                error = proctor::telemetry::error_chain(&e),
                "review app failed"
            );
            std::process::ExitCode::from(3)
        }
    }
}
