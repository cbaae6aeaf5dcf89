//! Dispatch: one MCP `tools/call` to an agent, with a timeout per attempt,
//! retries with backoff for failures a retry can fix (the connection
//! closed, the agent died and was restarted, the attempt timed out) and
//! never for a rejected call (invalid parameters, unknown tool), progress
//! notifications forwarded to the caller, and cancellation sent on to the
//! agent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam, ClientRequest,
    ErrorCode, JsonObject, ServerResult,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::registry::Agent;

/// A progress notification from an agent, as forwarded to the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub agent: String,
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// How to make one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Time allowed per attempt (default: the agent's `timeout_ms`).
    pub timeout: Option<Duration>,
    /// Attempts (default: the agent's `attempts`).
    pub attempts: Option<u32>,
    /// Where progress notifications go.
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// Cancelling it cancels the call on the agent.
    pub cancel: CancellationToken,
}

/// A call that returned a result (which may still be a tool error: see
/// `result.is_error`).
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub result: CallToolResult,
    pub attempts: u32,
    pub latency_ms: f64,
}

/// Why a call gave no result.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("agent `{agent}` rejected the call to `{tool}`: {message}")]
    Rejected {
        agent: String,
        tool: String,
        message: String,
        attempts: u32,
    },
    #[error(
        "agent `{agent}` did not answer `{tool}` within {timeout:?} ({attempts} attempt{}); \
         raise the agent's timeout_ms or ask for less", if *attempts == 1 { "" } else { "s" }
    )]
    Timeout {
        agent: String,
        tool: String,
        timeout: Duration,
        attempts: u32,
    },
    #[error("agent `{agent}` is unavailable after {attempts} attempt{}: {reason}", if *attempts == 1 { "" } else { "s" })]
    Unavailable {
        agent: String,
        reason: String,
        attempts: u32,
    },
    #[error("the call to `{tool}` on agent `{agent}` was cancelled")]
    Cancelled {
        agent: String,
        tool: String,
        attempts: u32,
    },
}

impl DispatchError {
    pub fn attempts(&self) -> u32 {
        match self {
            DispatchError::Rejected { attempts, .. }
            | DispatchError::Timeout { attempts, .. }
            | DispatchError::Unavailable { attempts, .. }
            | DispatchError::Cancelled { attempts, .. } => *attempts,
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Done(CallToolResult),
    /// Worth another attempt, after reconnecting when `reconnect`.
    Retry {
        reason: String,
        reconnect: bool,
        timed_out: bool,
    },
    Fail(DispatchError),
}

/// Calls `tool` on `agent` with `arguments`.
pub async fn call(
    agent: &Arc<Agent>,
    tool: &str,
    arguments: JsonObject,
    options: &CallOptions,
) -> Result<CallOutcome, DispatchError> {
    let start = Instant::now();
    let attempts = options.attempts.unwrap_or(agent.entry.attempts).max(1);
    let timeout = options.timeout.unwrap_or_else(|| agent.timeout());
    let name = agent.name().to_string();
    let mut last_reason = String::new();
    let mut all_timeouts = true;
    for attempt in 1..=attempts {
        if options.cancel.is_cancelled() {
            return Err(DispatchError::Cancelled {
                agent: name,
                tool: tool.into(),
                attempts: attempt - 1,
            });
        }
        if attempt > 1 {
            let pause = Duration::from_millis(200 * (1 << (attempt - 2).min(4)));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = options.cancel.cancelled() => continue,
            }
        }
        match once(agent, tool, arguments.clone(), timeout, options, attempt).await {
            Attempt::Done(result) => {
                return Ok(CallOutcome {
                    result,
                    attempts: attempt,
                    latency_ms: start.elapsed().as_secs_f64() * 1000.0,
                });
            }
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry {
                reason,
                reconnect,
                timed_out,
            } => {
                tracing::warn!("agent {name}, {tool}, attempt {attempt}/{attempts}: {reason}");
                all_timeouts &= timed_out;
                last_reason = reason;
                if reconnect {
                    agent.disconnect().await;
                }
            }
        }
    }
    Err(if all_timeouts {
        DispatchError::Timeout {
            agent: name,
            tool: tool.into(),
            timeout,
            attempts,
        }
    } else {
        DispatchError::Unavailable {
            agent: name,
            reason: last_reason,
            attempts,
        }
    })
}

async fn once(
    agent: &Arc<Agent>,
    tool: &str,
    arguments: JsonObject,
    timeout: Duration,
    options: &CallOptions,
    attempt: u32,
) -> Attempt {
    let name = agent.name().to_string();
    let conn = match agent.connect().await {
        Ok(c) => c,
        Err(e) => {
            return Attempt::Retry {
                reason: format!("{e:#}"),
                reconnect: false,
                timed_out: false,
            };
        }
    };
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new(tool.to_string()).with_arguments(arguments),
    ));
    let handle = match conn
        .peer
        .send_request_with_option(request, PeerRequestOptions::with_timeout(timeout))
        .await
    {
        Ok(h) => h,
        Err(e) => {
            return Attempt::Retry {
                reason: format!("sending the call failed: {e}"),
                reconnect: true,
                timed_out: false,
            };
        }
    };
    let id = handle.id.clone();
    let mut progress = conn.progress.subscribe(handle.progress_token.clone()).await;
    let response = handle.await_response();
    tokio::pin!(response);
    let outcome = loop {
        tokio::select! {
            r = &mut response => break r,
            Some(p) = progress.next() => {
                if let Some(tx) = &options.progress {
                    let _ = tx.send(Progress { agent: name.clone(), progress: p.progress, total: p.total, message: p.message });
                }
            }
            () = options.cancel.cancelled() => {
                let note = CancelledNotificationParam::new(Some(id), Some("cancelled by the caller".into()));
                let _ = conn.peer.notify_cancelled(note).await;
                return Attempt::Fail(DispatchError::Cancelled { agent: name, tool: tool.into(), attempts: attempt });
            }
        }
    };
    match outcome {
        Ok(ServerResult::CallToolResult(result)) => Attempt::Done(result),
        Ok(other) => Attempt::Fail(DispatchError::Rejected {
            agent: name,
            tool: tool.into(),
            message: format!("unexpected response: {other:?}"),
            attempts: attempt,
        }),
        Err(ServiceError::McpError(e)) => {
            let hint = if e.code == ErrorCode::INVALID_PARAMS {
                " (check the arguments against the tool's input schema)"
            } else {
                ""
            };
            Attempt::Fail(DispatchError::Rejected {
                agent: name,
                tool: tool.into(),
                message: format!("{}{hint}", e.message),
                attempts: attempt,
            })
        }
        Err(ServiceError::Timeout { timeout }) => Attempt::Retry {
            reason: format!("no answer within {timeout:?}"),
            reconnect: false,
            timed_out: true,
        },
        Err(ServiceError::Cancelled { .. }) => Attempt::Fail(DispatchError::Cancelled {
            agent: name,
            tool: tool.into(),
            attempts: attempt,
        }),
        Err(e) => Attempt::Retry {
            reason: format!("the connection failed: {e}"),
            reconnect: true,
            timed_out: false,
        },
    }
}
