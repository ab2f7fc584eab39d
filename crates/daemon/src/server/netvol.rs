//! `/networks` and `/volumes`: Docker's network and volume endpoints over the engine's
//! [`engine::network::NetService`] and [`volume::VolumeStore`].
//!
//! Both services are synchronous (netlink, iptables-restore, file copies), so every call
//! runs on a blocking thread. Answers use Docker's JSON shapes; errors map by kind
//! (unknown: 404, in use or overlapping: 409, bad input: 400).

use super::{filters, json, json_body, qbool, AppState, Error, Res};
use api::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// The routes of this module (merged into the main router).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/networks", get(network_list))
        .route("/networks/create", post(network_create))
        .route("/networks/prune", post(network_prune))
        .route(
            "/networks/{id}",
            get(network_inspect).delete(network_remove),
        )
        .route("/networks/{id}/connect", post(network_connect))
        .route("/networks/{id}/disconnect", post(network_disconnect))
        .route("/volumes", get(volume_list))
        .route("/volumes/create", post(volume_create))
        .route("/volumes/prune", post(volume_prune))
        .route("/volumes/{name}", get(volume_inspect).delete(volume_remove))
}

fn net_e(e: net::NetError) -> Error {
    Error(ApiError::from_error(&e))
}

fn vol_e(e: volume::VolumeError) -> Error {
    Error(ApiError::from_error(&e))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Res<T> + Send + 'static) -> Res<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error(ApiError::internal(format!("blocking task failed: {e}"))))?
}

fn network_json(n: &net::Network) -> Value {
    let created = chrono::DateTime::from_timestamp(n.created as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default();
    let config: Vec<Value> = n
        .subnet
        .iter()
        .map(|s| {
            let mut c = json!({"Subnet": s.to_string()});
            if let Some(g) = n.gateway {
                c["Gateway"] = json!(g.to_string());
            }
            c
        })
        .collect();
    let containers: BTreeMap<String, Value> = n
        .endpoints
        .values()
        .map(|ep| {
            (
                ep.container_id.clone(),
                json!({
                    "Name": ep.container_name,
                    "EndpointID": ep.endpoint_id,
                    "MacAddress": ep.mac,
                    "IPv4Address": format!("{}/{}", ep.ip, ep.prefix_len),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    let mut options = n.options.clone();
    if let Some(b) = &n.bridge {
        options
            .entry("com.docker.network.bridge.name".into())
            .or_insert_with(|| b.clone());
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": created,
        "Scope": "local",
        "Driver": n.driver.as_str(),
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.labels,
    })
}

async fn network_list(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Res {
    let f = filters(&q)?;
    let nets = st.engine.networks().manager().list();
    let out: Vec<Value> = nets
        .iter()
        .filter(|n| {
            f.get("name")
                .is_none_or(|v| v.iter().any(|x| n.name.contains(x.as_str())))
                && f.get("id")
                    .is_none_or(|v| v.iter().any(|x| n.id.starts_with(x.as_str())))
                && f.get("type").is_none_or(|v| {
                    v.iter().any(|x| {
                        (x == "custom" && !n.is_predefined())
                            || (x == "builtin" && n.is_predefined())
                    })
                })
                && f.get("driver")
                    .is_none_or(|v| v.iter().any(|x| x == n.driver.as_str()))
                && f.get("label").is_none_or(|v| {
                    v.iter().all(|l| match l.split_once('=') {
                        Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
                        None => n.labels.contains_key(l),
                    })
                })
        })
        .map(network_json)
        .collect();
    Ok(json(StatusCode::OK, &out))
}

async fn network_inspect(State(st): State<AppState>, Path(id): Path<String>) -> Res {
    let n = st.engine.networks().manager().inspect(&id).map_err(net_e)?;
    Ok(json(StatusCode::OK, &network_json(&n)))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: String,
    gateway: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    config: Option<Vec<IpamConfig>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkCreate {
    name: String,
    driver: String,
    internal: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    labels: Option<BTreeMap<String, String>>,
    options: Option<BTreeMap<String, String>>,
}

async fn network_create(State(st): State<AppState>, body: Bytes) -> Res {
    let b: NetworkCreate = json_body(&body)?;
    if b.name.is_empty() {
        return Err(Error(ApiError::invalid("network name must not be empty")));
    }
    let driver = match b.driver.as_str() {
        "" | "bridge" => net::Driver::Bridge,
        other => {
            return Err(Error(ApiError::invalid(format!(
                "network driver {other:?} is not supported (only bridge)"
            ))))
        }
    };
    if b.enable_ipv6 == Some(true) {
        return Err(Error(ApiError::invalid("IPv6 networks are not supported")));
    }
    let cfgs = b.ipam.and_then(|i| i.config).unwrap_or_default();
    if cfgs.len() > 1 {
        return Err(Error(ApiError::invalid(
            "only one IPAM config (one IPv4 subnet) is supported",
        )));
    }
    let (mut subnet, mut gateway) = (None, None);
    if let Some(c) = cfgs.first() {
        if !c.subnet.is_empty() {
            subnet =
                Some(c.subnet.parse().map_err(|_| {
                    Error(ApiError::invalid(format!("invalid subnet {:?}", c.subnet)))
                })?);
        }
        if !c.gateway.is_empty() {
            gateway = Some(c.gateway.parse().map_err(|_| {
                Error(ApiError::invalid(format!(
                    "invalid gateway {:?}",
                    c.gateway
                )))
            })?);
        }
    }
    let spec = net::NetworkSpec {
        name: b.name,
        driver: Some(driver),
        subnet,
        gateway,
        internal: b.internal,
        labels: b.labels.unwrap_or_default(),
        options: b.options.unwrap_or_default(),
    };
    let eng = st.engine.clone();
    let n = blocking(move || eng.networks().manager().create_network(spec).map_err(net_e)).await?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": n.id, "Warning": ""}),
    ))
}

async fn network_remove(State(st): State<AppState>, Path(id): Path<String>) -> Res {
    let eng = st.engine.clone();
    blocking(move || eng.networks().manager().remove_network(&id).map_err(net_e)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn network_prune(State(st): State<AppState>) -> Res {
    let eng = st.engine.clone();
    let gone = blocking(move || eng.networks().manager().prune().map_err(net_e)).await?;
    Ok(json(StatusCode::OK, &json!({"NetworksDeleted": gone})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    endpoint_config: Option<api::EndpointSettings>,
}

async fn network_connect(State(st): State<AppState>, Path(id): Path<String>, body: Bytes) -> Res {
    let b: ConnectBody = json_body(&body)?;
    let net = st.engine.networks().manager().inspect(&id).map_err(net_e)?;
    let eng = st.engine.clone();
    let ep = b.endpoint_config.unwrap_or_default();
    blocking(move || Ok(eng.network_connect(&b.container, &net.id, ep)?)).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DisconnectBody {
    container: String,
}

async fn network_disconnect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Res {
    let b: DisconnectBody = json_body(&body)?;
    let net = st.engine.networks().manager().inspect(&id).map_err(net_e)?;
    let eng = st.engine.clone();
    blocking(move || Ok(eng.network_disconnect(&b.container, &net.id)?)).await?;
    Ok(StatusCode::OK.into_response())
}

fn volume_json(v: &volume::Volume) -> Value {
    json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Scope": "local",
        "Options": v.options,
    })
}

async fn volume_list(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Res {
    let f = filters(&q)?;
    let eng = st.engine.clone();
    let vols = blocking(move || eng.volumes().list().map_err(vol_e)).await?;
    let out: Vec<Value> = vols
        .iter()
        .filter(|v| {
            f.get("name")
                .is_none_or(|x| x.iter().any(|n| v.name.contains(n.as_str())))
                && f.get("label").is_none_or(|ls| {
                    ls.iter().all(|l| match l.split_once('=') {
                        Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
                        None => v.labels.contains_key(l),
                    })
                })
                && f.get("dangling").is_none_or(|d| {
                    let dangling = st.engine.volumes().users(&v.name).is_empty();
                    d.iter().any(|x| (x == "true" || x == "1") == dangling)
                })
        })
        .map(volume_json)
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({"Volumes": out, "Warnings": []}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeCreate {
    name: String,
    driver: String,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

async fn volume_create(State(st): State<AppState>, body: Bytes) -> Res {
    let b: VolumeCreate = json_body(&body)?;
    if !matches!(b.driver.as_str(), "" | "local") {
        return Err(Error(ApiError::invalid(format!(
            "volume driver {:?} is not supported (only local)",
            b.driver
        ))));
    }
    let eng = st.engine.clone();
    let v = blocking(move || {
        let name = (!b.name.is_empty()).then_some(b.name.as_str());
        eng.volumes()
            .create(
                name,
                b.labels.unwrap_or_default(),
                b.driver_opts.unwrap_or_default(),
            )
            .map_err(vol_e)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &volume_json(&v)))
}

async fn volume_inspect(State(st): State<AppState>, Path(name): Path<String>) -> Res {
    let v = st.engine.volumes().get(&name).map_err(vol_e)?;
    Ok(json(StatusCode::OK, &volume_json(&v)))
}

async fn volume_remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Res {
    let force = qbool(&q, "force");
    let eng = st.engine.clone();
    blocking(move || eng.volumes().remove(&name, force).map_err(vol_e)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn volume_prune(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Res {
    let f = filters(&q)?;
    let all = f
        .get("all")
        .is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
    let labels = f.get("label").cloned().unwrap_or_default();
    let eng = st.engine.clone();
    let r = blocking(move || eng.volumes().prune(all, &labels).map_err(vol_e)).await?;
    Ok(json(
        StatusCode::OK,
        &json!({"VolumesDeleted": r.deleted, "SpaceReclaimed": r.space_reclaimed}),
    ))
}

/// Networking options of the engine from the daemon's options.
pub(crate) fn net_options(
    bridge: Option<&str>,
    subnet: Option<&str>,
    chain_prefix: Option<&str>,
) -> Result<net::ManagerOptions, String> {
    let mut o = net::ManagerOptions::default();
    if let Some(b) = bridge {
        o.default_bridge = b.to_string();
    }
    if let Some(s) = subnet {
        o.default_subnet = Some(
            s.parse::<ipnet::Ipv4Net>()
                .map_err(|_| format!("invalid bridge subnet {s:?}"))?
                .trunc(),
        );
    }
    if let Some(c) = chain_prefix {
        o.chain_prefix = c.to_string();
    }
    Ok(o)
}
