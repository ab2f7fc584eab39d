#![warn(missing_docs)]
//! The berth command line: docker's commands over the Engine API.
//!
//! The CLI knows nothing of the engine's internals: every command is one or a few HTTP
//! requests to the daemon's unix socket ([`client`]). Commands take docker's flags
//! ([`Command`]) and print docker's formats: aligned tables ([`format::tabwrite`]), `-q`
//! id lists, and `--format` Go templates ([`template`]). [`execute`] runs one command on a
//! single-threaded tokio runtime and returns the process exit code, mapping failures like
//! docker: `Error response from daemon: <message>` on stderr, exit 125 when `run`/`create`
//! fail before the container runs (126 cannot invoke, 127 command not found), else 1, and
//! the container's own exit code for `run`, `start -a`, `exec` and `wait`.

pub mod client;
pub mod format;
pub mod ignore;
pub mod opts;
pub mod stream;
pub mod template;
pub mod tty;

mod build;
mod container;
mod image;
mod system;

use clap::{Args, Subcommand};

pub use container::StatusError;

/// Options that come before the command.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalOpts {
    /// Daemon socket to connect to (unix:///PATH)
    #[arg(short = 'H', long = "host", env = "BERTH_HOST")]
    pub host: Option<String>,
    /// Location of the client config files (default ~/.docker)
    #[arg(long)]
    pub config: Option<String>,
}

/// The CLI's commands (docker's names, flags and management groups).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(container::RunArgs),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(container::CreateArgs),
    /// Start one or more stopped containers
    Start(container::StartArgs),
    /// Stop one or more running containers
    Stop(container::StopArgs),
    /// Restart one or more containers
    Restart(container::StopArgs),
    /// Kill one or more running containers
    Kill(container::KillArgs),
    /// Remove one or more containers
    Rm(container::RmArgs),
    /// List containers
    Ps(container::PsArgs),
    /// Fetch the logs of a container
    Logs(container::LogsArgs),
    /// Execute a command in a running container
    Exec(container::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(container::AttachArgs),
    /// Return low-level information on Docker objects
    Inspect(container::InspectArgs),
    /// Display the running processes of a container
    Top(container::TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(container::StatsArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(container::CpArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(container::NamesArgs),
    /// Rename a container
    Rename(container::RenameArgs),
    /// Pause all processes within one or more containers
    Pause(container::NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(container::NamesArgs),
    /// Update configuration of one or more containers
    Update(container::UpdateArgs),
    /// List port mappings or a specific mapping for the container
    Port(container::PortArgs),
    /// Export a container's filesystem as a tar archive
    Export(container::ExportArgs),
    /// Create a new image from a container's changes
    Commit(container::CommitArgs),
    /// Download an image from a registry
    Pull(image::PullArgs),
    /// Upload an image to a registry
    Push(image::PushArgs),
    /// List images
    Images(image::ImagesArgs),
    /// Remove one or more images
    Rmi(image::RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(image::TagArgs),
    /// Save one or more images to a tar archive
    Save(image::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(image::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(image::ImportArgs),
    /// Show the history of an image
    History(image::HistoryArgs),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
    /// Log in to a registry
    Login(image::LoginArgs),
    /// Log out from a registry
    Logout(image::LogoutArgs),
    /// Show the Docker version information
    Version(system::FormatArgs),
    /// Display system-wide information
    Info(system::FormatArgs),
    /// Get real time events from the server
    Events(system::EventsArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(system::VolumeCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(system::NetworkCommand),
    /// Manage Docker
    #[command(subcommand)]
    System(system::SystemCommand),
}

/// `berth container ...`.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// List containers
    #[command(alias = "list", alias = "ps")]
    Ls(container::PsArgs),
    /// Remove all stopped containers
    Prune(system::PruneArgs),
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(container::RunArgs),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(container::CreateArgs),
    /// Start one or more stopped containers
    Start(container::StartArgs),
    /// Stop one or more running containers
    Stop(container::StopArgs),
    /// Restart one or more containers
    Restart(container::StopArgs),
    /// Kill one or more running containers
    Kill(container::KillArgs),
    /// Remove one or more containers
    #[command(alias = "remove")]
    Rm(container::RmArgs),
    /// Fetch the logs of a container
    Logs(container::LogsArgs),
    /// Execute a command in a running container
    Exec(container::ExecArgs),
    /// Attach to a running container
    Attach(container::AttachArgs),
    /// Display detailed information on one or more containers
    Inspect(container::InspectArgs),
    /// Display the running processes of a container
    Top(container::TopArgs),
    /// Display resource usage statistics
    Stats(container::StatsArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(container::CpArgs),
    /// Block until one or more containers stop
    Wait(container::NamesArgs),
    /// Rename a container
    Rename(container::RenameArgs),
    /// Pause all processes within one or more containers
    Pause(container::NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(container::NamesArgs),
    /// Update configuration of one or more containers
    Update(container::UpdateArgs),
    /// List port mappings
    Port(container::PortArgs),
    /// Export a container's filesystem as a tar archive
    Export(container::ExportArgs),
    /// Create a new image from a container's changes
    Commit(container::CommitArgs),
}

/// `berth image ...`.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(image::ImagesArgs),
    /// Remove unused images
    Prune(system::PruneArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(image::RmiArgs),
    /// Display detailed information on one or more images
    Inspect(container::InspectArgs),
    /// Download an image from a registry
    Pull(image::PullArgs),
    /// Upload an image to a registry
    Push(image::PushArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(image::TagArgs),
    /// Show the history of an image
    History(image::HistoryArgs),
    /// Save one or more images to a tar archive
    Save(image::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(image::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(image::ImportArgs),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
}

impl ContainerCommand {
    fn into_command(self) -> Result<Command, system::PruneArgs> {
        use ContainerCommand as C;
        Ok(match self {
            C::Ls(a) => Command::Ps(a),
            C::Prune(a) => return Err(a),
            C::Run(a) => Command::Run(a),
            C::Create(a) => Command::Create(a),
            C::Start(a) => Command::Start(a),
            C::Stop(a) => Command::Stop(a),
            C::Restart(a) => Command::Restart(a),
            C::Kill(a) => Command::Kill(a),
            C::Rm(a) => Command::Rm(a),
            C::Logs(a) => Command::Logs(a),
            C::Exec(a) => Command::Exec(a),
            C::Attach(a) => Command::Attach(a),
            C::Inspect(mut a) => {
                a.kind.get_or_insert_with(|| "container".into());
                Command::Inspect(a)
            }
            C::Top(a) => Command::Top(a),
            C::Stats(a) => Command::Stats(a),
            C::Cp(a) => Command::Cp(a),
            C::Wait(a) => Command::Wait(a),
            C::Rename(a) => Command::Rename(a),
            C::Pause(a) => Command::Pause(a),
            C::Unpause(a) => Command::Unpause(a),
            C::Update(a) => Command::Update(a),
            C::Port(a) => Command::Port(a),
            C::Export(a) => Command::Export(a),
            C::Commit(a) => Command::Commit(a),
        })
    }
}

impl ImageCommand {
    fn into_command(self) -> Result<Command, system::PruneArgs> {
        use ImageCommand as I;
        Ok(match self {
            I::Ls(a) => Command::Images(a),
            I::Prune(a) => return Err(a),
            I::Rm(a) => Command::Rmi(a),
            I::Inspect(mut a) => {
                a.kind.get_or_insert_with(|| "image".into());
                Command::Inspect(a)
            }
            I::Pull(a) => Command::Pull(a),
            I::Push(a) => Command::Push(a),
            I::Tag(a) => Command::Tag(a),
            I::History(a) => Command::History(a),
            I::Save(a) => Command::Save(a),
            I::Load(a) => Command::Load(a),
            I::Import(a) => Command::Import(a),
            I::Build(a) => Command::Build(a),
        })
    }
}

/// What a command needs: the daemon client and the client config directory.
pub struct Ctx {
    /// The API client.
    pub client: client::Client,
    /// Where `config.json` lives (`--config`, `$DOCKER_CONFIG`, else `~/.docker`).
    pub config_dir: std::path::PathBuf,
}

fn config_dir(global: &GlobalOpts) -> std::path::PathBuf {
    if let Some(c) = &global.config {
        return c.into();
    }
    if let Some(c) = std::env::var_os("DOCKER_CONFIG") {
        return c.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::path::PathBuf::from(home).join(".docker")
}

/// Runs one command and returns the process exit code (errors are printed to stderr).
pub fn execute(global: &GlobalOpts, cmd: Command) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    let fails_with_125 = matches!(
        cmd,
        Command::Run(_)
            | Command::Create(_)
            | Command::Container(ContainerCommand::Run(_))
            | Command::Container(ContainerCommand::Create(_))
    );
    let host = global
        .host
        .clone()
        .unwrap_or_else(|| client::DEFAULT_HOST.to_string());
    let result = match client::Client::new(&host) {
        Ok(client) => {
            let ctx = Ctx {
                client,
                config_dir: config_dir(global),
            };
            rt.block_on(dispatch(&ctx, cmd))
        }
        Err(e) => Err(e),
    };
    // Blocking stdin readers may still be parked; do not wait for them.
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(s) = e.downcast_ref::<StatusError>() {
                if let Some(m) = &s.message {
                    eprintln!("{m}");
                }
                return s.code;
            }
            eprintln!("{e:#}");
            if fails_with_125 {
                125
            } else {
                1
            }
        }
    }
}

async fn dispatch(ctx: &Ctx, cmd: Command) -> anyhow::Result<i32> {
    use Command as C;
    match cmd {
        C::Run(a) => container::run(ctx, a).await,
        C::Create(a) => container::create(ctx, a).await,
        C::Start(a) => container::start(ctx, a).await,
        C::Stop(a) => container::stop(ctx, a, "stop").await,
        C::Restart(a) => container::stop(ctx, a, "restart").await,
        C::Kill(a) => container::kill(ctx, a).await,
        C::Rm(a) => container::rm(ctx, a).await,
        C::Ps(a) => container::ps(ctx, a).await,
        C::Logs(a) => container::logs(ctx, a).await,
        C::Exec(a) => container::exec(ctx, a).await,
        C::Attach(a) => container::attach(ctx, a).await,
        C::Inspect(a) => container::inspect(ctx, a).await,
        C::Top(a) => container::top(ctx, a).await,
        C::Stats(a) => container::stats(ctx, a).await,
        C::Cp(a) => container::cp(ctx, a).await,
        C::Wait(a) => container::wait(ctx, a).await,
        C::Rename(a) => container::rename(ctx, a).await,
        C::Pause(a) => container::simple_post(ctx, a, "pause").await,
        C::Unpause(a) => container::simple_post(ctx, a, "unpause").await,
        C::Update(a) => container::update(ctx, a).await,
        C::Port(a) => container::port(ctx, a).await,
        C::Export(a) => container::export(ctx, a).await,
        C::Commit(a) => container::commit(ctx, a).await,
        C::Pull(a) => image::pull(ctx, a).await,
        C::Push(a) => image::push(ctx, a).await,
        C::Images(a) => image::images(ctx, a).await,
        C::Rmi(a) => image::rmi(ctx, a).await,
        C::Tag(a) => image::tag(ctx, a).await,
        C::Save(a) => image::save(ctx, a).await,
        C::Load(a) => image::load(ctx, a).await,
        C::Import(a) => image::import(ctx, a).await,
        C::History(a) => image::history(ctx, a).await,
        C::Build(a) => build::build(ctx, a).await,
        C::Login(a) => image::login(ctx, a).await,
        C::Logout(a) => image::logout(ctx, a).await,
        C::Version(a) => system::version(ctx, a).await,
        C::Info(a) => system::info(ctx, a).await,
        C::Events(a) => system::events(ctx, a).await,
        C::Container(c) => match c.into_command() {
            Ok(cmd) => Box::pin(dispatch(ctx, cmd)).await,
            Err(p) => system::prune(ctx, p, "containers").await,
        },
        C::Image(c) => match c.into_command() {
            Ok(cmd) => Box::pin(dispatch(ctx, cmd)).await,
            Err(p) => system::prune(ctx, p, "images").await,
        },
        C::Volume(c) => system::volume(ctx, c).await,
        C::Network(c) => system::network(ctx, c).await,
        C::System(c) => system::system(ctx, c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn command_tree_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_host_and_groups() {
        let c = Cli::try_parse_from(["berth", "-H", "unix:///tmp/x.sock", "container", "ls", "-a"])
            .unwrap();
        assert_eq!(c.global.host.as_deref(), Some("unix:///tmp/x.sock"));
        assert!(matches!(c.command, Command::Container(ContainerCommand::Ls(ref p)) if p.all));
        let c = Cli::try_parse_from(["berth", "run", "-h", "myhost", "--rm", "img"]).unwrap();
        match c.command {
            Command::Run(r) => assert_eq!(r.opts.hostname.as_deref(), Some("myhost")),
            other => panic!("parsed as {other:?}"),
        }
        let c = Cli::try_parse_from(["berth", "image", "inspect", "x"]).unwrap();
        let Command::Image(i) = c.command else {
            panic!("not an image command")
        };
        match i.into_command() {
            Ok(Command::Inspect(a)) => assert_eq!(a.kind.as_deref(), Some("image")),
            other => panic!("{other:?}"),
        }
    }
}
