//! Request and response bodies of the Docker Engine API (field names exactly Docker's).
//!
//! Request types derive `Default` and use `#[serde(default)]`, so absent fields, `null`
//! and unknown fields are all accepted; wrong types are a deserialization error that the
//! daemon reports as `400`. Response types serialize every field Docker clients read.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// A map of string to string (labels, options), accepting `null` as empty.
pub type StringMap = BTreeMap<String, String>;

/// An empty JSON object (`{}`), as used by `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Empty {}

/// Deserializes a value that may be `null` as its default.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Deserializes a command given as an array of strings or as one string (older clients),
/// `null` meaning "not set".
pub fn string_or_vec<'de, D>(d: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sv {
        S(String),
        V(Vec<String>),
    }
    Ok(match Option::<Sv>::deserialize(d)? {
        None => None,
        Some(Sv::S(s)) => Some(vec![s]),
        Some(Sv::V(v)) => Some(v),
    })
}

/// The portable part of a container's configuration (`Config` in create and inspect).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    /// The container's hostname.
    pub hostname: String,
    /// The container's domain name.
    pub domainname: String,
    /// `user`, `user:group`, `uid` or `uid:gid` the process runs as.
    pub user: String,
    /// Whether stdin is attached.
    pub attach_stdin: bool,
    /// Whether stdout is attached.
    pub attach_stdout: bool,
    /// Whether stderr is attached.
    pub attach_stderr: bool,
    /// Ports exposed (`"80/tcp": {}`).
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// Whether a pseudo-terminal is allocated.
    pub tty: bool,
    /// Whether stdin is kept open.
    pub open_stdin: bool,
    /// Whether stdin is closed after the first attached client detaches.
    pub stdin_once: bool,
    /// Environment, `NAME=value`.
    #[serde(deserialize_with = "null_default")]
    pub env: Vec<String>,
    /// The command (arguments to the entrypoint).
    #[serde(deserialize_with = "string_or_vec")]
    pub cmd: Option<Vec<String>>,
    /// Health check (kept as given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    /// Whether the command is already escaped (Windows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// The image name the container was created from.
    pub image: String,
    /// Anonymous volumes (`"/data": {}`).
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// The working directory.
    pub working_dir: String,
    /// The entrypoint.
    #[serde(deserialize_with = "string_or_vec")]
    pub entrypoint: Option<Vec<String>>,
    /// Whether networking is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_disabled: Option<bool>,
    /// Build triggers (images only).
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_build: Option<Vec<String>>,
    /// Labels.
    #[serde(deserialize_with = "null_default")]
    pub labels: StringMap,
    /// The signal that stops the container (`SIGTERM` when empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds to wait after the stop signal before SIGKILL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    /// The shell of `RUN`/`CMD` shell forms (images only).
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub shell: Option<Vec<String>>,
}

/// `RestartPolicy` of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    /// `""`, `no`, `always`, `unless-stopped` or `on-failure`.
    pub name: String,
    /// The maximum number of restarts of `on-failure` (0: unlimited).
    pub maximum_retry_count: i64,
}

/// `LogConfig` of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    /// The log driver (`json-file`; `none` disables logs).
    #[serde(rename = "Type")]
    pub kind: String,
    /// Driver options (`max-size`, `max-file`).
    #[serde(deserialize_with = "null_default")]
    pub config: StringMap,
}

/// A host port a container port is published on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// The host IP (empty: all).
    pub host_ip: String,
    /// The host port (empty: any).
    pub host_port: String,
}

/// A resource limit (`--ulimit`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ulimit {
    /// The limit's name (`nofile`).
    pub name: String,
    /// The soft limit.
    pub soft: i64,
    /// The hard limit.
    pub hard: i64,
}

/// A host device made available in the container (`--device`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeviceMapping {
    /// The device on the host.
    pub path_on_host: String,
    /// The path in the container.
    pub path_in_container: String,
    /// Cgroup permissions (`rwm`).
    pub cgroup_permissions: String,
}

/// Options of a bind mount in [`Mount`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindOptions {
    /// Mount propagation.
    pub propagation: String,
    /// Do not recursively bind mount.
    pub non_recursive: bool,
}

/// Options of a tmpfs mount in [`Mount`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    /// Size in bytes (0: unlimited).
    pub size_bytes: i64,
    /// Mode of the tmpfs root.
    pub mode: u32,
}

/// Options of a volume mount in [`Mount`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    /// Do not copy the image's data into a new volume.
    pub no_copy: bool,
    /// Labels of the volume.
    #[serde(deserialize_with = "null_default")]
    pub labels: StringMap,
}

/// A mount in `HostConfig.Mounts` (`--mount`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Mount {
    /// The path in the container.
    pub target: String,
    /// The host path (bind) or volume name (volume).
    pub source: String,
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Bind options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    /// Volume options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    /// Tmpfs options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
}

/// The non-portable part of a container's configuration (`HostConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// Bind mounts and volumes, `src:dst[:opts]`.
    #[serde(deserialize_with = "null_default")]
    pub binds: Vec<String>,
    /// Where the CLI writes the container id.
    #[serde(rename = "ContainerIDFile")]
    pub container_id_file: String,
    /// Logging configuration.
    pub log_config: LogConfig,
    /// `none`, `host`, `bridge`, `default` or a network name.
    pub network_mode: String,
    /// Published ports: `"80/tcp": [{"HostIp": "", "HostPort": "8080"}]`.
    #[serde(deserialize_with = "null_default")]
    pub port_bindings: BTreeMap<String, Option<Vec<PortBinding>>>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// Volume driver.
    pub volume_driver: String,
    /// Containers whose volumes are mounted too.
    #[serde(deserialize_with = "null_default")]
    pub volumes_from: Vec<String>,
    /// Mounts (`--mount`).
    #[serde(deserialize_with = "null_default")]
    pub mounts: Vec<Mount>,
    /// Capabilities added to the default set.
    #[serde(deserialize_with = "null_default")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped from the default set.
    #[serde(deserialize_with = "null_default")]
    pub cap_drop: Vec<String>,
    /// Cgroup namespace mode.
    pub cgroupns_mode: String,
    /// DNS servers.
    #[serde(deserialize_with = "null_default")]
    pub dns: Vec<String>,
    /// DNS options.
    #[serde(deserialize_with = "null_default")]
    pub dns_options: Vec<String>,
    /// DNS search domains.
    #[serde(deserialize_with = "null_default")]
    pub dns_search: Vec<String>,
    /// Extra `/etc/hosts` lines, `host:ip`.
    #[serde(deserialize_with = "null_default")]
    pub extra_hosts: Vec<String>,
    /// Extra groups of the process.
    #[serde(deserialize_with = "null_default")]
    pub group_add: Vec<String>,
    /// IPC namespace mode.
    pub ipc_mode: String,
    /// Cgroup of the container.
    pub cgroup: String,
    /// Legacy links.
    #[serde(deserialize_with = "null_default")]
    pub links: Vec<String>,
    /// OOM score adjustment.
    pub oom_score_adj: i64,
    /// PID namespace mode (`host`).
    pub pid_mode: String,
    /// Run privileged.
    pub privileged: bool,
    /// Publish all exposed ports.
    pub publish_all_ports: bool,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// Security options (`seccomp=unconfined`, `no-new-privileges`).
    #[serde(deserialize_with = "null_default")]
    pub security_opt: Vec<String>,
    /// Tmpfs mounts: path → options.
    #[serde(deserialize_with = "null_default")]
    pub tmpfs: StringMap,
    /// UTS namespace mode.
    #[serde(rename = "UTSMode")]
    pub uts_mode: String,
    /// User namespace mode.
    pub userns_mode: String,
    /// Size of `/dev/shm` in bytes.
    pub shm_size: i64,
    /// Sysctls.
    #[serde(deserialize_with = "null_default")]
    pub sysctls: StringMap,
    /// OCI runtime name.
    pub runtime: String,
    /// Isolation technology (Windows).
    pub isolation: String,
    /// Paths masked in the container (null: Docker's defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked_paths: Option<Vec<String>>,
    /// Paths read-only in the container (null: Docker's defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly_paths: Option<Vec<String>>,
    /// Run an init as PID 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// CPU shares (relative weight).
    pub cpu_shares: i64,
    /// Memory limit in bytes.
    pub memory: i64,
    /// Parent cgroup.
    pub cgroup_parent: String,
    /// Block IO weight.
    pub blkio_weight: u16,
    /// CFS period in microseconds.
    pub cpu_period: i64,
    /// CFS quota in microseconds.
    pub cpu_quota: i64,
    /// Real-time period.
    pub cpu_realtime_period: i64,
    /// Real-time runtime.
    pub cpu_realtime_runtime: i64,
    /// CPUs allowed (`0-3`, `0,1`).
    pub cpuset_cpus: String,
    /// Memory nodes allowed.
    pub cpuset_mems: String,
    /// Devices.
    #[serde(deserialize_with = "null_default")]
    pub devices: Vec<DeviceMapping>,
    /// Device cgroup rules.
    #[serde(deserialize_with = "null_default")]
    pub device_cgroup_rules: Vec<String>,
    /// Memory soft limit.
    pub memory_reservation: i64,
    /// Memory plus swap limit (-1: unlimited).
    pub memory_swap: i64,
    /// Memory swappiness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swappiness: Option<i64>,
    /// CPU quota in units of 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Disable the OOM killer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill_disable: Option<bool>,
    /// Maximum number of pids (0 or -1: unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// Resource limits.
    #[serde(deserialize_with = "null_default")]
    pub ulimits: Vec<Ulimit>,
}

/// Per-network endpoint settings in `NetworkingConfig` and `NetworkSettings.Networks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSettings {
    /// Static IP configuration.
    #[serde(rename = "IPAMConfig", skip_serializing_if = "Option::is_none")]
    pub ipam_config: Option<serde_json::Value>,
    /// Legacy links.
    #[serde(deserialize_with = "null_default")]
    pub links: Vec<String>,
    /// Network-scoped aliases.
    #[serde(deserialize_with = "null_default")]
    pub aliases: Vec<String>,
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The gateway address.
    pub gateway: String,
    /// The IPv4 address.
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// The IPv4 prefix length.
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: i64,
    /// The MAC address.
    pub mac_address: String,
    /// DNS names of the endpoint.
    #[serde(rename = "DNSNames", deserialize_with = "null_default")]
    pub dns_names: Vec<String>,
}

/// `NetworkingConfig` of container create.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    /// Endpoint settings by network name.
    #[serde(deserialize_with = "null_default")]
    pub endpoints_config: BTreeMap<String, EndpointSettings>,
}

/// The body of `POST /containers/create`: the config plus host and networking config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerCreateBody {
    /// The portable configuration.
    #[serde(flatten)]
    pub config: ContainerConfig,
    /// The host configuration.
    #[serde(deserialize_with = "null_default")]
    pub host_config: HostConfig,
    /// The networking configuration.
    #[serde(deserialize_with = "null_default")]
    pub networking_config: NetworkingConfig,
}

/// The response of container create: `{"Id": ..., "Warnings": [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreateResponse {
    /// The new container's id.
    pub id: String,
    /// Warnings about the configuration.
    pub warnings: Vec<String>,
}

/// `State` of an inspected container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub status: String,
    /// Whether the container runs (true while paused too).
    pub running: bool,
    /// Whether it is paused.
    pub paused: bool,
    /// Whether it is restarting.
    pub restarting: bool,
    /// Whether the last exit was an OOM kill.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Whether it is dead.
    pub dead: bool,
    /// The host pid of its process (0 when not running).
    pub pid: i64,
    /// The exit code of the last run.
    pub exit_code: i64,
    /// Why the last start failed.
    pub error: String,
    /// When it last started (RFC 3339).
    pub started_at: String,
    /// When it last finished (RFC 3339).
    pub finished_at: String,
    /// The healthcheck's state (containers with a healthcheck that have started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// `State.Health` of an inspected container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Consecutive failed probes.
    pub failing_streak: i64,
    /// The last probes (at most 5), oldest first.
    pub log: Vec<HealthcheckResult>,
}

/// One probe of a healthcheck.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthcheckResult {
    /// When it started (RFC 3339).
    pub start: String,
    /// When it ended (RFC 3339).
    pub end: String,
    /// Its exit code (0 healthy, 1 unhealthy, -1 could not run or timed out).
    pub exit_code: i64,
    /// The start of its output.
    pub output: String,
}

/// A mount as inspect and list report it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The volume name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The host path.
    pub source: String,
    /// The path in the container.
    pub destination: String,
    /// The volume driver.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Mount mode (`ro`, `z`).
    pub mode: String,
    /// Whether writable.
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Propagation.
    pub propagation: String,
}

/// A storage driver's data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct GraphDriver {
    /// The driver's name (`overlay2`).
    pub name: String,
    /// Driver data (`MergedDir`, `UpperDir`, ...).
    pub data: StringMap,
}

/// A published port in `NetworkSettings.Ports`.
pub type PortMap = BTreeMap<String, Option<Vec<PortBinding>>>;

/// `NetworkSettings` of an inspected container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSettings {
    /// The sandbox id.
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    /// The sandbox's netns path.
    pub sandbox_key: String,
    /// Published ports.
    pub ports: PortMap,
    /// The primary IPv4 address.
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// The primary gateway.
    pub gateway: String,
    /// Endpoints by network name.
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInspect {
    /// The full id.
    pub id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The executable.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The state.
    pub state: ContainerState,
    /// The image id (`sha256:...`).
    pub image: String,
    /// Path of the container's resolv.conf.
    pub resolv_conf_path: String,
    /// Path of the container's hostname file.
    pub hostname_path: String,
    /// Path of the container's hosts file.
    pub hosts_path: String,
    /// Path of the json-file log.
    pub log_path: String,
    /// The name with a leading `/`.
    pub name: String,
    /// How often the restart policy restarted it.
    pub restart_count: i64,
    /// The storage driver.
    pub driver: String,
    /// The platform (`linux`).
    pub platform: String,
    /// SELinux mount label.
    pub mount_label: String,
    /// SELinux process label.
    pub process_label: String,
    /// AppArmor profile.
    pub app_armor_profile: String,
    /// Ids of exec instances.
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
    /// The host configuration.
    pub host_config: HostConfig,
    /// Storage driver data.
    pub graph_driver: GraphDriver,
    /// Mounts.
    pub mounts: Vec<MountPoint>,
    /// The configuration.
    pub config: ContainerConfig,
    /// Network settings.
    pub network_settings: NetworkSettings,
}

/// A port in [`ContainerSummary`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Port {
    /// The host IP.
    #[serde(rename = "IP", skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The container port.
    pub private_port: u16,
    /// The host port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    /// `tcp`, `udp` or `sctp`.
    #[serde(rename = "Type")]
    pub kind: String,
}

/// `HostConfig` in [`ContainerSummary`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SummaryHostConfig {
    /// The network mode.
    pub network_mode: String,
}

/// `NetworkSettings` in [`ContainerSummary`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SummaryNetworkSettings {
    /// Endpoints by network name.
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// An item of `GET /containers/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSummary {
    /// The full id.
    pub id: String,
    /// Names, each with a leading `/`.
    pub names: Vec<String>,
    /// The image name it was created from.
    pub image: String,
    /// The image id.
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// The command line.
    pub command: String,
    /// Creation time (Unix seconds).
    pub created: i64,
    /// Published ports.
    pub ports: Vec<Port>,
    /// Labels.
    pub labels: StringMap,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    /// Human text (`Up 3 seconds`, `Exited (0) 2 minutes ago`).
    pub status: String,
    /// Host config summary.
    pub host_config: SummaryHostConfig,
    /// Network summary.
    pub network_settings: SummaryNetworkSettings,
    /// Mounts.
    pub mounts: Vec<MountPoint>,
}

/// The body of `POST /containers/{id}/wait`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerWaitResponse {
    /// The exit code.
    pub status_code: i64,
    /// Set when waiting failed.
    pub error: Option<WaitError>,
}

/// The error of a failed wait.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct WaitError {
    /// What went wrong.
    pub message: String,
}

/// The body of `POST /containers/{id}/update`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerUpdateBody {
    /// Memory limit.
    pub memory: Option<i64>,
    /// Memory + swap limit.
    pub memory_swap: Option<i64>,
    /// CPU shares.
    pub cpu_shares: Option<i64>,
    /// Nano CPUs.
    pub nano_cpus: Option<i64>,
    /// CFS quota.
    pub cpu_quota: Option<i64>,
    /// CFS period.
    pub cpu_period: Option<i64>,
    /// Cpuset.
    pub cpuset_cpus: Option<String>,
    /// Pids limit.
    pub pids_limit: Option<i64>,
    /// A new restart policy.
    pub restart_policy: Option<RestartPolicy>,
}

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    /// Attach stdin.
    pub attach_stdin: bool,
    /// Attach stdout.
    pub attach_stdout: bool,
    /// Attach stderr.
    pub attach_stderr: bool,
    /// Detach keys.
    pub detach_keys: String,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Terminal size `[height, width]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_size: Option<Vec<u16>>,
    /// Extra environment.
    #[serde(deserialize_with = "null_default")]
    pub env: Vec<String>,
    /// The command.
    #[serde(deserialize_with = "string_or_vec")]
    pub cmd: Option<Vec<String>>,
    /// Run privileged.
    pub privileged: bool,
    /// The user.
    pub user: String,
    /// The working directory.
    pub working_dir: String,
}

/// The body of `POST /exec/{id}/start`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecStartConfig {
    /// Start detached.
    pub detach: bool,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Terminal size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_size: Option<Vec<u16>>,
}

/// `ProcessConfig` of an exec inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecProcessConfig {
    /// Privileged.
    pub privileged: bool,
    /// The user.
    pub user: String,
    /// Tty.
    pub tty: bool,
    /// The executable.
    pub entrypoint: String,
    /// Its arguments.
    pub arguments: Vec<String>,
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecInspect {
    /// Whether the terminal can be resized.
    pub can_remove: bool,
    /// Detach keys.
    pub detach_keys: String,
    /// The exec's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Whether it runs.
    pub running: bool,
    /// Its exit code, once exited.
    pub exit_code: Option<i64>,
    /// The process.
    pub process_config: ExecProcessConfig,
    /// Stdin open.
    pub open_stdin: bool,
    /// Stderr open.
    pub open_stderr: bool,
    /// Stdout open.
    pub open_stdout: bool,
    /// The container's id.
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    /// The host pid.
    pub pid: i64,
}

/// An item of `GET /images/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageSummary {
    /// The image id (`sha256:...`).
    pub id: String,
    /// The parent id (empty).
    pub parent_id: String,
    /// Tags (`name:tag`).
    pub repo_tags: Vec<String>,
    /// Digests (`name@sha256:...`).
    pub repo_digests: Vec<String>,
    /// Creation time (Unix seconds).
    pub created: i64,
    /// Size in bytes.
    pub size: i64,
    /// Shared size (-1: not computed).
    pub shared_size: i64,
    /// Virtual size (deprecated, = Size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<i64>,
    /// Labels.
    pub labels: StringMap,
    /// Containers using it (-1: not computed).
    pub containers: i64,
}

/// `RootFS` of an inspected image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Diff ids of the layers.
    pub layers: Vec<String>,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageInspect {
    /// The image id.
    pub id: String,
    /// Tags.
    pub repo_tags: Vec<String>,
    /// Digests.
    pub repo_digests: Vec<String>,
    /// Parent.
    pub parent: String,
    /// Comment.
    pub comment: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Author.
    pub author: String,
    /// The image's run configuration.
    pub config: ContainerConfig,
    /// Architecture.
    pub architecture: String,
    /// Variant.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// Os.
    pub os: String,
    /// Size in bytes.
    pub size: i64,
    /// Storage driver data.
    pub graph_driver: GraphDriver,
    /// The layers.
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    /// Docker version that built it.
    pub docker_version: String,
}

/// An item of `GET /images/{name}/history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageHistoryItem {
    /// Image id or `<missing>`.
    pub id: String,
    /// Creation time (Unix seconds).
    pub created: i64,
    /// The command that made the layer.
    pub created_by: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Layer size.
    pub size: i64,
    /// Comment.
    pub comment: String,
}

/// An item of `DELETE /images/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageDeleteItem {
    /// A removed tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untagged: Option<String>,
    /// A removed image id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
}

/// Byte progress of a pull or push step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProgressDetail {
    /// Bytes done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// Bytes in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// The error of a failed stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// The message.
    pub message: String,
}

/// One line of a JSON progress stream (pull, push, load, import, build).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JsonMessage {
    /// The layer or image the line is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What happens (`Downloading`, `Pull complete`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Byte progress.
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    /// A rendered progress bar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Build output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Set on failure.
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    /// Set on failure (legacy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Auxiliary data (image id of a build, digest of a push).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

impl JsonMessage {
    /// A status line.
    pub fn status(status: impl Into<String>) -> JsonMessage {
        JsonMessage {
            status: Some(status.into()),
            ..Default::default()
        }
    }

    /// An error line.
    pub fn error(message: impl Into<String>) -> JsonMessage {
        let message = message.into();
        JsonMessage {
            error_detail: Some(ErrorDetail {
                message: message.clone(),
            }),
            error: Some(message),
            ..Default::default()
        }
    }
}

/// A component of [`SystemVersion`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ComponentVersion {
    /// The component's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Details.
    pub details: StringMap,
}

/// `GET /version`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SystemVersion {
    /// The platform.
    pub platform: BTreeMap<String, String>,
    /// Components.
    pub components: Vec<ComponentVersion>,
    /// The engine version.
    pub version: String,
    /// The newest API version.
    pub api_version: String,
    /// The oldest API version.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// The git commit.
    pub git_commit: String,
    /// The language version.
    pub go_version: String,
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub arch: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Experimental features on.
    pub experimental: bool,
    /// Build time.
    pub build_time: String,
}

/// `GET /info` (the fields clients read).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SystemInfo {
    /// Daemon id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Number of containers.
    pub containers: i64,
    /// Running containers.
    pub containers_running: i64,
    /// Paused containers.
    pub containers_paused: i64,
    /// Stopped containers.
    pub containers_stopped: i64,
    /// Number of images.
    pub images: i64,
    /// Storage driver.
    pub driver: String,
    /// Driver status.
    pub driver_status: Vec<Vec<String>>,
    /// Memory limits supported.
    pub memory_limit: bool,
    /// Swap limits supported.
    pub swap_limit: bool,
    /// CFS period supported.
    pub cpu_cfs_period: bool,
    /// CFS quota supported.
    pub cpu_cfs_quota: bool,
    /// CPU shares supported.
    #[serde(rename = "CPUShares")]
    pub cpu_shares: bool,
    /// Cpuset supported.
    #[serde(rename = "CPUSet")]
    pub cpu_set: bool,
    /// Pids limit supported.
    pub pids_limit: bool,
    /// IPv4 forwarding.
    #[serde(rename = "IPv4Forwarding")]
    pub ipv4_forwarding: bool,
    /// Debug mode.
    pub debug: bool,
    /// Open file descriptors of the daemon.
    #[serde(rename = "NFd")]
    pub nfd: i64,
    /// Goroutines (tasks).
    pub n_goroutines: i64,
    /// Now (RFC 3339).
    pub system_time: String,
    /// Logging driver.
    pub logging_driver: String,
    /// Cgroup driver.
    pub cgroup_driver: String,
    /// Cgroup version.
    pub cgroup_version: String,
    /// Event listeners.
    pub n_events_listener: i64,
    /// Kernel release.
    pub kernel_version: String,
    /// OS name.
    pub operating_system: String,
    /// OS version.
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    /// `linux`.
    #[serde(rename = "OSType")]
    pub os_type: String,
    /// Architecture.
    pub architecture: String,
    /// CPUs.
    #[serde(rename = "NCPU")]
    pub ncpu: i64,
    /// Memory in bytes.
    pub mem_total: i64,
    /// Root directory.
    pub docker_root_dir: String,
    /// Host name.
    pub name: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Experimental build.
    pub experimental_build: bool,
    /// Engine version.
    pub server_version: String,
    /// Runtimes.
    pub runtimes: BTreeMap<String, serde_json::Value>,
    /// Default runtime.
    pub default_runtime: String,
    /// Live restore enabled.
    pub live_restore_enabled: bool,
    /// Isolation.
    pub isolation: String,
    /// Init binary.
    pub init_binary: String,
    /// Security options.
    pub security_options: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
}

/// An event of `GET /events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventMessage {
    /// `container`, `image`, `volume`, `network`, `daemon`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `start`, `die`, ...
    #[serde(rename = "Action")]
    pub action: String,
    /// The object.
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    /// `local`.
    pub scope: String,
    /// Unix seconds.
    pub time: i64,
    /// Unix nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    /// Legacy: status (= action).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Legacy: id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Legacy: image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The object of an [`EventMessage`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventActor {
    /// Its id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Attributes (name, image, exitCode, labels).
    #[serde(rename = "Attributes")]
    pub attributes: StringMap,
}

/// `GET /containers/{id}/top`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerTopResponse {
    /// Column titles.
    pub titles: Vec<String>,
    /// Rows.
    pub processes: Vec<Vec<String>>,
}

/// An item of `GET /containers/{id}/changes`-like prune answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerPruneResponse {
    /// Removed container ids.
    pub containers_deleted: Vec<String>,
    /// Bytes reclaimed.
    pub space_reclaimed: u64,
}

/// `POST /images/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ImagePruneResponse {
    /// What was removed.
    pub images_deleted: Vec<ImageDeleteItem>,
    /// Bytes reclaimed.
    pub space_reclaimed: u64,
}

/// `GET /system/df`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SystemDf {
    /// Bytes used by layers.
    pub layers_size: i64,
    /// Images.
    pub images: Vec<ImageSummary>,
    /// Containers.
    pub containers: Vec<ContainerSummary>,
    /// Volumes.
    pub volumes: Vec<serde_json::Value>,
    /// Build cache.
    pub build_cache: Vec<serde_json::Value>,
}

/// `POST /commit` answer and other `{"Id": ...}` answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct IdResponse {
    /// The id.
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_accepts_docker_cli_json() {
        let j = r#"{"Hostname":"","User":"","AttachStdout":true,"Tty":false,"Env":null,
            "Cmd":["sh","-c","echo hi"],"Image":"busybox","Volumes":{},"Entrypoint":null,
            "Labels":{"a":"b"},"Unknown":1,
            "HostConfig":{"Binds":null,"NetworkMode":"default","RestartPolicy":{"Name":"no","MaximumRetryCount":0},
              "AutoRemove":true,"PortBindings":{},"Mounts":null,"PidsLimit":null,"Ulimits":null},
            "NetworkingConfig":{"EndpointsConfig":{}}}"#;
        let b: ContainerCreateBody = serde_json::from_str(j).unwrap();
        assert_eq!(b.config.image, "busybox");
        assert_eq!(b.config.cmd.as_deref().unwrap()[2], "echo hi");
        assert!(b.config.env.is_empty());
        assert!(b.config.entrypoint.is_none());
        assert!(b.host_config.auto_remove);
        assert_eq!(b.host_config.restart_policy.name, "no");
        assert_eq!(b.config.labels.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn cmd_as_string_and_wrong_types() {
        let b: ContainerCreateBody =
            serde_json::from_str(r#"{"Image":"x","Cmd":"echo hi"}"#).unwrap();
        assert_eq!(b.config.cmd, Some(vec!["echo hi".to_string()]));
        assert!(serde_json::from_str::<ContainerCreateBody>(r#"{"Image":5}"#).is_err());
        assert!(
            serde_json::from_str::<ContainerCreateBody>(r#"{"HostConfig":{"Memory":"x"}}"#)
                .is_err()
        );
    }

    #[test]
    fn inspect_serializes_docker_names() {
        let v = serde_json::to_value(ContainerInspect::default()).unwrap();
        for k in [
            "Id",
            "State",
            "HostConfig",
            "Config",
            "NetworkSettings",
            "ExecIDs",
        ] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        assert!(v["State"].get("OOMKilled").is_some());
    }
}
