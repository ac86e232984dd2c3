//! S3 objects: miner outputs in the jobs bucket, reference outputs in the reference
//! bucket. Works with any S3 (garage here) through path-style addressing.
//!
//! Reads are bounded: at most `limit + 1` bytes of an object are ever held, so an
//! oversized upload costs bounded memory and is still recognisable as oversized.
//! Errors are split the way the pipeline needs them: [`Got::NotFound`] is an answer
//! (the store says the key does not exist), [`ObjectError`] is an infrastructure
//! failure to retry, never evidence against a miner.

use std::time::Duration;

use aws_credential_types::provider::future;
use aws_sdk_s3::config::{
    Credentials, ProvideCredentials, Region, SharedCredentialsProvider, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

use crate::settings::S3Settings;

#[derive(Debug, thiserror::Error)]
#[error("S3 {op} {bucket}/{key}: {message}")]
pub struct ObjectError {
    pub op: &'static str,
    pub bucket: String,
    pub key: String,
    pub message: String,
    /// The store refused the request for what it asks (see [`refuses_request`]):
    /// retrying cannot help.
    pub refused: bool,
}

/// Whether an S3 answer's HTTP status refuses the request itself: a malformed or
/// oversized request (400, 411, 413, 414, 431). Authentication and permission errors
/// (401, 403) are a deployment's fault and are retried like an outage, so that a
/// broken credential delays verdicts and never dead-letters miners' jobs; so are
/// timeouts, throttling and every 5xx.
pub fn refuses_request(status: u16) -> bool {
    matches!(status, 400 | 411 | 413 | 414 | 431)
}

/// The answer to a bounded read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// The object's bytes, truncated to `limit + 1` when it is larger.
    Found(Vec<u8>),
    NotFound,
}

/// The AWS SDK's default credential chain (environment, profile, web identity, ECS,
/// instance metadata), built on first use: building it is async, and a client is made
/// where no runtime may be running yet.
#[derive(Debug)]
struct DefaultChain {
    chain:
        tokio::sync::OnceCell<aws_config::default_provider::credentials::DefaultCredentialsChain>,
    region: Region,
}

impl ProvideCredentials for DefaultChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| {
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .region(self.region.clone())
                        .build()
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

#[derive(Clone)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
}

impl ObjectStore {
    /// A client for the settings' endpoint: with the static keys of the settings when
    /// both are set, else with the AWS SDK's default credential chain.
    pub fn new(s3: &S3Settings) -> ObjectStore {
        let creds = if !s3.access_key_id.is_empty() && s3.secret_access_key.is_set() {
            SharedCredentialsProvider::new(Credentials::new(
                &s3.access_key_id,
                s3.secret_access_key.expose(),
                None,
                None,
                "proctor-settings",
            ))
        } else {
            SharedCredentialsProvider::new(DefaultChain {
                chain: tokio::sync::OnceCell::new(),
                region: Region::new(s3.region.clone()),
            })
        };
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .endpoint_url(&s3.endpoint)
            .region(Region::new(s3.region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            .timeout_config(timeouts)
            // Retries are the pipeline's (bounded backoff that never gives up on a
            // transient failure); one attempt here keeps the two from multiplying.
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        ObjectStore {
            client: aws_sdk_s3::Client::from_conf(config),
        }
    }

    /// Reads at most `limit + 1` bytes of `bucket/key`.
    pub async fn get_bounded(
        &self,
        bucket: &str,
        key: &str,
        limit: u64,
    ) -> Result<Got, ObjectError> {
        let err = |op, message: String, refused| ObjectError {
            op,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message,
            refused,
        };
        let resp = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let svc = e.as_service_error();
                if svc.is_some_and(|s| s.is_no_such_key()) || e.code() == Some("NoSuchKey") {
                    return Ok(Got::NotFound);
                }
                let refused = e
                    .raw_response()
                    .is_some_and(|r| refuses_request(r.status().as_u16()));
                return Err(err(
                    "get",
                    format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
                    refused,
                ));
            }
        };
        let mut body = resp.body;
        let cap = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
        let hint = resp
            .content_length
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(cap);
        let mut buf = Vec::with_capacity(hint);
        while buf.len() < cap {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    let take = chunk.len().min(cap - buf.len());
                    buf.extend_from_slice(&chunk[..take]);
                }
                Ok(None) => break,
                Err(e) => return Err(err("read", e.to_string(), false)),
            }
        }
        Ok(Got::Found(buf))
    }

    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ObjectError {
                op: "put",
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                refused: e
                    .raw_response()
                    .is_some_and(|r| refuses_request(r.status().as_u16())),
                message: format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
            })
    }

    /// The SDK client, for a call this wrapper does not make (the tests' probes of the
    /// store's own behaviour).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Whether the bucket answers: the readiness probe.
    pub async fn ping(&self, bucket: &str) -> Result<(), ObjectError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ObjectError {
                op: "head",
                bucket: bucket.to_owned(),
                key: String::new(),
                message: format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
                refused: false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_malformed_request_is_refused_for_good() {
        for status in [400, 411, 413, 414, 431] {
            assert!(refuses_request(status), "{status}");
        }
        // Outages, throttling and a deployment's credentials are retried.
        for status in [401, 403, 404, 408, 429, 500, 502, 503, 504] {
            assert!(!refuses_request(status), "{status}");
        }
    }
}
