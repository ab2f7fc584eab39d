//! `POST /exec/{id}/start` of an exec with a terminal: the hijacked connection carries
//! the raw terminal both ways (no multiplexed framing), relayed to and from the pty master
//! the engine received from the runtime. The exit code is recorded when the runtime
//! (which waits for the process) exits.

use super::{upgrade_response, Res};
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::exec::ExecProcess;
use engine::Engine;
use hyper_util::rt::TokioIo;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long output is still read after the process exited (a background process may
/// hold the terminal open forever).
const DRAIN: Duration = Duration::from_millis(200);

/// Serves a started terminal exec: detached (output discarded), over an upgraded
/// connection (the client's input typed into the terminal when `stdin`, i.e.
/// `AttachStdin`), or as a plain streamed body without stdin.
pub(super) fn serve(
    engine: Engine,
    id: String,
    proc: ExecProcess,
    master: OwnedFd,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    detach: bool,
    stdin: bool,
) -> Res {
    let reader = match master.try_clone() {
        Ok(r) => tokio::fs::File::from_std(std::fs::File::from(r)),
        Err(e) => {
            return Err(super::Error(api::ApiError::internal(format!(
                "duplicate the exec terminal: {e}"
            ))))
        }
    };
    let writer = tokio::fs::File::from_std(std::fs::File::from(master));
    let child = proc.child;
    if detach {
        tokio::spawn(async move {
            let sink = tokio::io::sink();
            relay_out(reader, sink, child, &engine, &id).await;
            drop(writer);
        });
        return Ok(StatusCode::OK.into_response());
    }
    match on_upgrade {
        Some(on_upgrade) => {
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    relay_out(reader, tokio::io::sink(), child, &engine, &id).await;
                    return;
                };
                let (mut cr, cw) = tokio::io::split(TokioIo::new(upgraded));
                let mut writer = writer;
                let input = tokio::spawn(async move {
                    if !stdin {
                        // Not attached: the client's input goes nowhere.
                        std::future::pending::<()>().await;
                    }
                    let mut buf = vec![0u8; 8192];
                    loop {
                        match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if writer.write_all(&buf[..n]).await.is_err()
                                    || writer.flush().await.is_err()
                                {
                                    break;
                                }
                            }
                        }
                    }
                    // Keep the terminal open: EOF on a terminal is a ^D, not a close.
                    std::future::pending::<()>().await;
                });
                relay_out(reader, cw, child, &engine, &id).await;
                input.abort();
            });
            Ok(upgrade_response(false))
        }
        None => {
            let (out, body) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                relay_out(reader, out, child, &engine, &id).await;
                drop(writer);
            });
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/vnd.docker.raw-stream")
                .body(Body::from_stream(tokio_util::io::ReaderStream::new(body)))
                .unwrap_or_default())
        }
    }
}

/// Copies the terminal's output to `out` until the terminal closes (EIO once every slave
/// is closed) or, after the process exited, until [`DRAIN`] passes with no more output;
/// then records the exit code and closes `out`. When `out` fails (the client detached),
/// the output is still read and dropped until then.
async fn relay_out<W: AsyncWrite + Unpin>(
    mut reader: tokio::fs::File,
    mut out: W,
    mut child: tokio::process::Child,
    engine: &Engine,
    id: &str,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut code = None;
    // Once the client is gone (detached), the output is drained and dropped so the
    // process never blocks on a full terminal.
    let mut client_gone = false;
    loop {
        let n = if code.is_some() {
            match tokio::time::timeout(DRAIN, reader.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                r = reader.read(&mut buf) => r,
                st = child.wait() => {
                    code = Some(st.ok().and_then(|s| s.code()).unwrap_or(-1));
                    continue;
                }
            }
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !client_gone && out.write_all(&buf[..n]).await.is_err() {
                    client_gone = true;
                }
                if !client_gone {
                    let _ = out.flush().await;
                }
            }
        }
    }
    let code = match code {
        Some(c) => c,
        None => child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1),
    };
    engine.exec_finished(id, i64::from(code));
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}
