//! Healthchecks (`HEALTHCHECK` of the image, `--health-*` of `docker run`).
//!
//! # Model
//!
//! A container's healthcheck is `Config.Healthcheck` (Docker's JSON: `Test`, durations in
//! nanoseconds), filled from the image's at create ([`merge`]). One checker task per
//! engine ([`Engine::spawn_health_checker`]) looks every [`SCAN`] for running containers
//! with a healthcheck whose current run (keyed by `State.StartedAt`) has no probe loop yet,
//! and starts one. A probe loop runs the `Test` command in the container through the OCI
//! runtime's `exec` every `Interval` (`StartInterval` during the start period) with
//! `Timeout`, and ends when the run ends. Each result updates the run's [`api::Health`]:
//! exit 0 makes it `healthy` and resets `FailingStreak`; any other result (or a timeout)
//! adds to the streak (except while `starting` within `StartPeriod`), and `Retries`
//! failures in a row make it `unhealthy`. Each status change publishes a
//! `health_status: <status>` event. The state lives in memory and, after each probe, in
//! `<bundle>/health.json` with the run it belongs to, so a restarted daemon that
//! re-adopts a running container carries on with its health (a new run starts at
//! `starting`).

use crate::error::Result;
use crate::Engine;
use api::{ExecConfig, Health, HealthcheckResult};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How often the checker looks for runs without a probe loop.
pub const SCAN: Duration = Duration::from_millis(250);
/// Docker keeps this many probe results.
const MAX_LOG: usize = 5;
/// The file in a container's bundle that keeps its health.
const HEALTH_FILE: &str = "health.json";
/// Docker keeps this much of a probe's output.
const MAX_OUTPUT: usize = 4096;

/// A parsed healthcheck with Docker's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The probe's argv (`CMD-SHELL` becomes `/bin/sh -c`).
    pub argv: Vec<String>,
    /// Time between probes (default 30 s).
    pub interval: Duration,
    /// Time a probe may take (default 30 s).
    pub timeout: Duration,
    /// Grace period after the start (default 0).
    pub start_period: Duration,
    /// Time between probes during the start period (default 5 s).
    pub start_interval: Duration,
    /// Failures in a row before `unhealthy` (default 3).
    pub retries: i64,
}

fn dur(v: &Value, key: &str, default: Duration) -> Duration {
    match v[key].as_i64() {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

/// Parses `Config.Healthcheck`; `None` when there is none, it is `NONE`, or its test is
/// not `CMD`/`CMD-SHELL`.
pub fn parse(v: Option<&Value>) -> Option<HealthConfig> {
    let v = v?;
    let test: Vec<String> = v["Test"]
        .as_array()?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    let argv = match test.split_first() {
        Some((k, rest)) if k == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((k, rest)) if k == "CMD-SHELL" && !rest.is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
        }
        _ => return None,
    };
    Some(HealthConfig {
        argv,
        interval: dur(v, "Interval", Duration::from_secs(30)),
        timeout: dur(v, "Timeout", Duration::from_secs(30)),
        start_period: dur(v, "StartPeriod", Duration::ZERO),
        start_interval: dur(v, "StartInterval", Duration::from_secs(5)),
        retries: v["Retries"].as_i64().filter(|r| *r > 0).unwrap_or(3),
    })
}

/// Fills the container's healthcheck from the image's, as Docker does: no healthcheck
/// takes the image's; one without a test takes the image's test, and each unset (zero)
/// setting the image's.
pub fn merge(cfg: &mut Option<Value>, img: Option<&Value>) {
    let Some(img) = img.filter(|v| v.is_object()) else {
        return;
    };
    let Some(c) = cfg.as_mut().filter(|c| c.is_object()) else {
        *cfg = Some(img.clone());
        return;
    };
    if c["Test"].as_array().is_none_or(|t| t.is_empty()) {
        c["Test"] = img["Test"].clone();
    }
    for k in [
        "Interval",
        "Timeout",
        "StartPeriod",
        "StartInterval",
        "Retries",
    ] {
        if c[k].as_i64().unwrap_or(0) == 0 && !img[k].is_null() {
            c[k] = img[k].clone();
        }
    }
}

/// The health of one run of a container.
struct Track {
    /// `State.StartedAt` of the run.
    run: String,
    /// `None` when the healthcheck is disabled (`NONE`).
    health: Option<Health>,
}

/// The health states of the containers' current runs.
#[derive(Default)]
pub struct HealthStates {
    map: Mutex<HashMap<String, Track>>,
}

impl HealthStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Track>> {
        match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// What `ps` appends to `Up ...` for a health status.
pub fn status_suffix(status: &str) -> &'static str {
    match status {
        "starting" => " (health: starting)",
        "healthy" => " (healthy)",
        "unhealthy" => " (unhealthy)",
        _ => "",
    }
}

impl Engine {
    /// The health of container `id`'s current (or last) run, if it has a healthcheck and
    /// started.
    pub fn health_of(&self, id: &str) -> Option<Health> {
        self.health_states()
            .lock()
            .get(id)
            .and_then(|t| t.health.clone())
    }

    /// The health status of container `id` (`none` without a healthcheck), for the
    /// `health` filter of `GET /containers/json`.
    pub fn health_status(&self, id: &str) -> String {
        self.health_of(id)
            .map(|h| h.status)
            .unwrap_or_else(|| "none".into())
    }

    /// Starts the checker task (once, at engine open; needs a tokio runtime). It lives as
    /// long as the runtime.
    pub(crate) fn spawn_health_checker(&self) {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(SCAN).await;
                engine.health_scan(tick.is_multiple_of(40));
                tick += 1;
            }
        });
    }

    /// Starts probe loops for new runs; with `prune`, forgets removed containers.
    fn health_scan(&self, prune: bool) {
        let runs = self.health_candidates();
        let fresh: Vec<(String, String)> = {
            let m = self.health_states().lock();
            runs.into_iter()
                .filter(|(id, run)| m.get(id).is_none_or(|t| &t.run != run))
                .collect()
        };
        let mut new = Vec::new();
        for (id, run) in fresh {
            let enabled = self
                .record(&id)
                .is_ok_and(|r| parse(r.config.healthcheck.as_ref()).is_some());
            let health = enabled.then(|| {
                self.load_health(&id, &run).unwrap_or_else(|| Health {
                    status: "starting".into(),
                    failing_streak: 0,
                    log: Vec::new(),
                })
            });
            self.health_states().lock().insert(
                id.clone(),
                Track {
                    run: run.clone(),
                    health,
                },
            );
            if enabled {
                new.push((id, run));
            }
        }
        if prune {
            let ids: Vec<String> = self.health_states().lock().keys().cloned().collect();
            let gone: Vec<String> = ids
                .into_iter()
                .filter(|id| self.record(id).is_err())
                .collect();
            let mut m = self.health_states().lock();
            for id in gone {
                m.remove(&id);
            }
        }
        for (id, run) in new {
            let engine = self.clone();
            tokio::spawn(async move { engine.probe_loop(id, run).await });
        }
    }

    /// Probes one run of a container until the run ends.
    async fn probe_loop(self, id: String, run: String) {
        let started = Instant::now();
        loop {
            let Ok(rec) = self.record(&id) else { return };
            if rec.state.started_at != run || !rec.state.status.is_running() {
                return;
            }
            let Some(cfg) = parse(rec.config.healthcheck.as_ref()) else {
                return;
            };
            let starting = self.health_of(&id).is_some_and(|h| h.status == "starting");
            let wait = if starting && started.elapsed() < cfg.start_period {
                cfg.start_interval.min(cfg.interval)
            } else {
                cfg.interval
            };
            tokio::time::sleep(wait).await;
            let Ok(rec) = self.record(&id) else { return };
            if rec.state.started_at != run || !rec.state.status.is_running() {
                return;
            }
            if rec.state.status == crate::containers::Status::Paused {
                continue;
            }
            let in_start_period = started.elapsed() < cfg.start_period;
            let result = self.probe(&id, &cfg).await;
            self.record_probe(&rec, &run, &cfg, result, in_start_period);
        }
    }

    /// Applies a probe result to the run's health; publishes a status change.
    fn record_probe(
        &self,
        rec: &crate::containers::ContainerRecord,
        run: &str,
        cfg: &HealthConfig,
        result: HealthcheckResult,
        in_start_period: bool,
    ) {
        let changed = {
            let mut m = self.health_states().lock();
            let Some(h) = m
                .get_mut(&rec.id)
                .filter(|t| t.run == run)
                .and_then(|t| t.health.as_mut())
            else {
                return;
            };
            let old = h.status.clone();
            if result.exit_code == 0 {
                h.failing_streak = 0;
                h.status = "healthy".into();
            } else if !(in_start_period && h.status == "starting") {
                h.failing_streak += 1;
                if h.failing_streak >= cfg.retries {
                    h.status = "unhealthy".into();
                }
            }
            h.log.push(result);
            if h.log.len() > MAX_LOG {
                let extra = h.log.len() - MAX_LOG;
                h.log.drain(..extra);
            }
            self.save_health(&rec.id, run, h);
            (h.status != old).then(|| h.status.clone())
        };
        if let Some(status) = changed {
            let mut attrs = rec.config.labels.clone();
            attrs.insert("name".into(), rec.name.clone());
            attrs.insert("image".into(), rec.image.clone());
            self.events().publish(
                "container",
                &format!("health_status: {status}"),
                &rec.id,
                attrs,
            );
        }
    }

    /// Writes the health of run `run` of container `id` to its bundle (best effort).
    fn save_health(&self, id: &str, run: &str, h: &Health) {
        let v = serde_json::json!({"Run": run, "Health": h});
        if let Ok(data) = serde_json::to_vec(&v) {
            let _ = crate::fsutil::write_atomic(&self.bundle(id).join(HEALTH_FILE), &data, false);
        }
    }

    /// The saved health of run `run` of container `id`, if any.
    fn load_health(&self, id: &str, run: &str) -> Option<Health> {
        let data = std::fs::read(self.bundle(id).join(HEALTH_FILE)).ok()?;
        let v: Value = serde_json::from_slice(&data).ok()?;
        if v["Run"].as_str() != Some(run) {
            return None;
        }
        serde_json::from_value(v["Health"].clone()).ok()
    }

    /// Runs the probe once in the container.
    async fn probe(&self, id: &str, cfg: &HealthConfig) -> HealthcheckResult {
        let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let start = now();
        let (exit_code, output) = match self.run_probe(id, cfg).await {
            Ok(r) => r,
            Err(e) => (-1, e.to_string()),
        };
        HealthcheckResult {
            start,
            end: now(),
            exit_code,
            output,
        }
    }

    async fn run_probe(&self, container: &str, cfg: &HealthConfig) -> Result<(i64, String)> {
        let probe_id = format!("health-{}", &crate::containers::new_id()[..16]);
        let exec = ExecConfig {
            attach_stdout: true,
            attach_stderr: true,
            cmd: Some(cfg.argv.clone()),
            ..Default::default()
        };
        let bundle = self.bundle(container);
        let cleanup = || {
            let _ = std::fs::remove_file(bundle.join(format!("exec-{probe_id}.json")));
            let _ = std::fs::remove_file(bundle.join(format!("exec-{probe_id}.pid")));
        };
        // As docker's, each probe shows in the events as an exec of the container.
        let cmd = cfg.argv.join(" ");
        self.exec_event(container, &format!("exec_create: {cmd}"), &probe_id, None);
        let mut proc = match self.spawn_exec(&probe_id, container, &exec).await {
            Ok(p) => p,
            Err(e) => {
                cleanup();
                return Err(e);
            }
        };
        self.exec_event(container, &format!("exec_start: {cmd}"), &probe_id, None);
        let mut out = proc.child.stdout.take();
        let mut err = proc.child.stderr.take();
        let collect = async {
            let mut o = Vec::new();
            let mut e = Vec::new();
            let read_o = async {
                if let Some(s) = out.as_mut() {
                    let _ = s.read_to_end(&mut o).await;
                }
            };
            let read_e = async {
                if let Some(s) = err.as_mut() {
                    let _ = s.read_to_end(&mut e).await;
                }
            };
            tokio::join!(read_o, read_e);
            let st = proc.child.wait().await;
            o.extend_from_slice(&e);
            (st, o)
        };
        let res = tokio::time::timeout(cfg.timeout, collect).await;
        let result = match res {
            Ok((st, mut output)) => {
                output.truncate(MAX_OUTPUT);
                let code = st.ok().and_then(|s| s.code()).unwrap_or(-1);
                (
                    i64::from(code),
                    String::from_utf8_lossy(&output).to_string(),
                )
            }
            Err(_) => {
                // Kill the probe in the container (the runtime exits with it).
                let pid_file = bundle.join(format!("exec-{probe_id}.pid"));
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .filter(|p| *p > 1)
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                (
                    -1,
                    format!(
                        "Health check exceeded timeout ({})",
                        go_duration(cfg.timeout)
                    ),
                )
            }
        };
        cleanup();
        self.exec_event(container, "exec_die", &probe_id, Some(result.0));
        Ok(result)
    }
}

/// A duration as Go prints it (`1s`, `1.5s`, `500ms`), for Docker's timeout message.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_tests_and_defaults() {
        let h = parse(Some(
            &json!({"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000}),
        ))
        .unwrap();
        assert_eq!(h.argv, ["/bin/sh", "-c", "true"]);
        assert_eq!(h.interval, Duration::from_secs(1));
        assert_eq!(h.timeout, Duration::from_secs(30));
        assert_eq!(h.retries, 3);
        let h = parse(Some(&json!({"Test": ["CMD", "ls", "/"], "Retries": 2}))).unwrap();
        assert_eq!((h.argv.len(), h.retries), (2, 2));
        assert!(parse(Some(&json!({"Test": ["NONE"]}))).is_none());
        assert!(parse(Some(&json!({"Test": []}))).is_none());
        assert!(parse(Some(&json!({"Test": ["ls"]}))).is_none());
        assert!(parse(None).is_none());
    }

    #[test]
    fn merges_with_the_image() {
        let img = json!({"Test": ["CMD", "true"], "Interval": 5, "Retries": 4});
        let mut c = None;
        merge(&mut c, Some(&img));
        assert_eq!(c, Some(img.clone()));
        let mut c = Some(json!({"Interval": 7}));
        merge(&mut c, Some(&img));
        let c = c.unwrap();
        assert_eq!(
            (
                c["Test"][1].as_str(),
                c["Interval"].as_i64(),
                c["Retries"].as_i64()
            ),
            (Some("true"), Some(7), Some(4))
        );
        let mut c = Some(json!({"Test": ["NONE"]}));
        merge(&mut c, Some(&img));
        assert!(parse(c.as_ref()).is_none());
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(300)), "300ms");
    }
}
