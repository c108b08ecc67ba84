//! The `recording` command line: `keygen`, `info`, `verify`, `export`.
//!
//! The proxy mounts [`RecordingCommand`] as `ztproxy recording …`; the crate's own
//! `zt-recording` binary runs the same [`run`]. This is the edge of the crate, so errors are
//! `anyhow` here and typed everywhere below.
//!
//! Key material is never taken from a plain argument, where `ps` and shell history would
//! show it: the resource secret comes from a file (`--secret-file`) or from an environment
//! variable named by `--secret-env`, in base64; an auditor's X25519 private key from the
//! file `keygen x25519` wrote.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use zeroize::Zeroizing;

use zt_recorder::error::ReadError;
use zt_recorder::export::{self, ExportSummary};
use zt_recorder::format::{Header, KeyWrap};
use zt_recorder::keys::{
    IdentityKey, IdentityPublicKey, MAX_KEY_FILE_LEN, RecipientSecretKey, ResourceSecret, Unlock,
};
use zt_recorder::reader::{
    EventRange, EventsEnd, RecordingReader, RecordingStatus, SignatureStatus, VerifyOptions,
    VerifyReport,
};

/// `zt-recording`: the standalone form of `ztproxy recording`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "zt-recording",
    version,
    about = "Inspect, verify and export ztproxy session recordings"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: RecordingCommand,
}

/// The `recording` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RecordingCommand {
    /// Generate a key pair: X25519 for auditors who read recordings, Ed25519 for the
    /// proxy's identity that signs them.
    Keygen(KeygenArgs),
    /// Show a recording's header. Needs no key.
    Info(InfoArgs),
    /// Check every chunk, their order, the final chunk and the manifest signature. Without
    /// a key only the structure, the manifest hash and the signature are checked.
    Verify(VerifyArgs),
    /// Export to a typescript (scriptreplay), asciicast v2 (asciinema), plain text, or a
    /// Guacamole recording (guacenc, the session player).
    Export(ExportArgs),
}

/// `keygen` arguments.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Key type.
    #[arg(value_enum)]
    pub algorithm: KeyAlgorithm,
    /// Private key file to create (mode 0600); the public key is written to `<OUT>.pub`.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Key types `keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// An auditor key pair; recordings wrapped to the public key open with the private one.
    X25519,
    /// A proxy identity key pair; manifests are signed with the private key.
    Ed25519,
}

/// How to unlock a recording.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeyArgs {
    /// File holding the resource secret, base64.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["secret_env", "x25519_key"])]
    pub secret_file: Option<PathBuf>,
    /// Name of an environment variable holding the resource secret, base64.
    #[arg(long, value_name = "VAR", conflicts_with = "x25519_key")]
    pub secret_env: Option<String>,
    /// X25519 private key file of an auditor the recording was wrapped to.
    #[arg(long, value_name = "PATH")]
    pub x25519_key: Option<PathBuf>,
}

/// `info` arguments.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Recording file.
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Recording file.
    pub file: PathBuf,
    /// Key to decrypt and authenticate the chunks.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Require a manifest signed by this Ed25519 public key file.
    #[arg(long, value_name = "PATH")]
    pub identity: Option<PathBuf>,
    /// Succeed for a recording whose writer stopped before finalising (its complete
    /// chunks must still verify).
    #[arg(long)]
    pub allow_unfinalised: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `export` arguments.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Recording file.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum)]
    pub format: Format,
    /// Output file, or `-` for standard output.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Timing file for `--format typescript` (default: `<OUTPUT>.timing`).
    #[arg(long, value_name = "PATH")]
    pub timing: Option<PathBuf>,
    /// Start of the range, from the start of the recording (`90`, `1.5`, `2m`, `1h2m3s`).
    #[arg(long, value_parser = parse_offset)]
    pub from: Option<Duration>,
    /// End of the range (inclusive).
    #[arg(long, value_parser = parse_offset)]
    pub to: Option<Duration>,
    /// Key to decrypt the recording.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

/// Export formats on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `script` typescript plus timing file, for `scriptreplay`.
    Typescript,
    /// asciicast v2, for `asciinema play` / `asciinema cat`.
    Asciicast,
    /// Plain text of the terminal output.
    Text,
    /// Guacamole recording (raw instruction stream), for guacenc and the session player.
    Guac,
}

/// Runs one `recording` subcommand.
pub fn run(command: RecordingCommand) -> anyhow::Result<()> {
    match command {
        RecordingCommand::Keygen(args) => keygen(&args),
        RecordingCommand::Info(args) => info(&args),
        RecordingCommand::Verify(args) => verify(&args),
        RecordingCommand::Export(args) => export(&args),
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let (private, public) = match args.algorithm {
        KeyAlgorithm::X25519 => {
            let key = RecipientSecretKey::generate()?;
            (key.to_text(), key.public_key().to_text())
        }
        KeyAlgorithm::Ed25519 => {
            let key = IdentityKey::generate()?;
            (key.to_text(), key.public_key().to_text())
        }
    };
    let public_path = with_suffix(&args.out, ".pub");
    if public_path.exists() {
        bail!("{} already exists", public_path.display());
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&args.out)
        .and_then(|mut f| f.write_all(private.as_bytes()))
        .with_context(|| format!("writing {}", args.out.display()))?;
    create_output(&public_path, false)?
        .write_all(public.as_bytes())
        .with_context(|| format!("writing {}", public_path.display()))?;
    println!(
        "wrote {} (private, keep it secret) and {}",
        args.out.display(),
        public_path.display()
    );
    Ok(())
}

#[derive(serde::Serialize)]
struct InfoJson<'a> {
    recording_id: String,
    format_version: u16,
    kind: zt_recorder::format::RecordingKind,
    includes_input: bool,
    session_id: &'a str,
    resource_id: &'a str,
    protocol: &'a str,
    start_time: String,
    size: zt_recorder::format::Size,
    chunk_size: u32,
    identity: Option<String>,
    key_wraps: Vec<String>,
    file_bytes: u64,
    manifest_present: bool,
}

fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let mut reader = open(&args.file)?;
    let manifest_present = reader.has_manifest()?;
    let h = reader.header().clone();
    let info = InfoJson {
        recording_id: h.recording_id.to_string(),
        format_version: zt_recorder::format::FORMAT_VERSION,
        kind: h.kind,
        includes_input: h.includes_input,
        session_id: &h.session_id,
        resource_id: &h.resource_id,
        protocol: &h.protocol,
        start_time: start_time(&h),
        size: h.size,
        chunk_size: h.chunk_size,
        identity: identity_fingerprint(&h),
        key_wraps: h.key_wraps.iter().map(describe_wrap).collect(),
        file_bytes: reader.file_len(),
        manifest_present,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("recording   {}", info.recording_id);
    println!(
        "kind        {} (input recorded: {})",
        info.kind,
        yes_no(info.includes_input)
    );
    println!("session     {}", info.session_id);
    println!("resource    {}", info.resource_id);
    println!("protocol    {}", info.protocol);
    println!("started     {}", info.start_time);
    println!("size        {}x{}", info.size.width, info.size.height);
    println!("chunk size  {} bytes", info.chunk_size);
    println!(
        "identity    {}",
        info.identity
            .as_deref()
            .unwrap_or("none (manifest unsigned)")
    );
    println!("key wraps   {}", info.key_wraps.join(", "));
    println!("file size   {} bytes", info.file_bytes);
    println!(
        "manifest    {}",
        if manifest_present {
            "present (run verify to check it)"
        } else {
            "absent: not finalised"
        }
    );
    Ok(())
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let mut reader = open(&args.file)?;
    let key = load_key(&args.key)?;
    if let Some(key) = &key {
        reader.unlock(key.unlock())?;
    }
    let expected_identity = match &args.identity {
        Some(path) => Some(IdentityPublicKey::from_text(&read_key_file(path)?)?),
        None => None,
    };
    let report = reader.verify(&VerifyOptions {
        require_finalised: false,
        expected_identity,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(reader.header(), &report);
    }
    if report.status != RecordingStatus::Finalised && !args.allow_unfinalised {
        bail!(ReadError::Truncated {
            valid_chunks: report.data_chunks,
            duration: report.duration.unwrap_or_default(),
        });
    }
    Ok(())
}

fn print_report(header: &Header, r: &VerifyReport) {
    println!("recording   {} ({})", header.recording_id, header.kind);
    match r.status {
        RecordingStatus::Finalised => println!("status      finalised"),
        RecordingStatus::NoManifest => {
            println!("status      UNFINALISED: final chunk present, manifest missing")
        }
        RecordingStatus::Unfinalised { trailing_bytes } => println!(
            "status      UNFINALISED: {} valid chunks, recorded duration {}, {} trailing bytes ignored",
            r.data_chunks,
            r.duration
                .map(|d| format!("{:.3}s", d.as_secs_f64()))
                .unwrap_or_else(|| "unknown (no key)".into()),
            trailing_bytes
        ),
    }
    if r.decrypted {
        println!(
            "chunks      {} data chunks decrypted and authenticated, in order",
            r.data_chunks
        );
        println!(
            "events      {} ({} payload bytes, {} key frames), duration {:.3}s",
            r.events.unwrap_or_default(),
            r.payload_bytes.unwrap_or_default(),
            r.key_frames.unwrap_or_default(),
            r.duration.unwrap_or_default().as_secs_f64()
        );
        let dropped = r.dropped_events.unwrap_or_default();
        if dropped > 0 {
            println!(
                "gaps        the proxy dropped {dropped} events ({} bytes) while recording",
                r.dropped_bytes.unwrap_or_default()
            );
        }
        if r.incomplete_last_event {
            println!("note        the last event was cut off and is not exported");
        }
    } else {
        println!(
            "chunks      {} data chunks in order (contents not decrypted: no key given)",
            r.data_chunks
        );
    }
    match (r.signature, r.signer) {
        (SignatureStatus::Valid, Some(fp)) => println!("signature   valid, identity {fp}"),
        (SignatureStatus::Valid, None) => println!("signature   valid"),
        (SignatureStatus::Unsigned, _) => println!("signature   none (no identity key configured)"),
        (SignatureStatus::NotChecked, _) => println!("signature   not checked (no manifest)"),
    }
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let mut reader = open(&args.file)?;
    let Some(key) = load_key(&args.key)? else {
        bail!("export needs a key: --secret-file, --secret-env or --x25519-key");
    };
    reader.unlock(key.unlock())?;
    // What `verify` rejects is not exported: a file whose chunks verify but whose manifest
    // area is malformed, for one, would otherwise export its events without a word. (An
    // unfinalised file verifies as a prefix, and exports with a warning below.)
    if let Err(error) = reader.verify(&VerifyOptions::default()) {
        bail!(
            "{} does not verify, so nothing was exported: {error}",
            args.file.display()
        );
    }
    let format = match args.format {
        Format::Typescript => export::ExportFormat::Typescript,
        Format::Asciicast => export::ExportFormat::Asciicast,
        Format::Text => export::ExportFormat::Text,
        Format::Guac => export::ExportFormat::Guac,
    };
    format.check_kind(reader.header().kind)?;
    let range = EventRange {
        from: args.from,
        to: args.to,
    };
    let from = args.from.unwrap_or_default();
    let mut created = Vec::new();
    let result = (|| -> anyhow::Result<ExportSummary> {
        let mut out = open_output(&args.output, args.force, &mut created)?;
        let mut events = reader.events(range)?;
        let summary = match format {
            export::ExportFormat::Typescript => {
                let timing_path = match (&args.timing, args.output == Path::new("-")) {
                    (Some(path), _) => path.clone(),
                    (None, false) => with_suffix(&args.output, ".timing"),
                    (None, true) => bail!("--timing is needed when the typescript goes to stdout"),
                };
                let mut timing = open_output(&timing_path, args.force, &mut created)?;
                export::export_typescript(&mut events, from, &mut out, &mut timing)?
            }
            export::ExportFormat::Asciicast => {
                export::export_asciicast(&mut events, from, &mut out)?
            }
            export::ExportFormat::Text => export::export_text(&mut events, &mut out)?,
            export::ExportFormat::Guac => export::export_guac(&mut events, &mut out)?,
        };
        Ok(summary)
    })();
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            for path in created {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
    };
    match summary.guac_start {
        Some(export::GuacStart::KeyFrame { instructions }) => eprintln!(
            "note: the stream drew before the display had a size; its first {instructions} \
             instructions are replaced by a key frame of the screen they built"
        ),
        Some(export::GuacStart::SizeAdded) => eprintln!(
            "warning: the stream drew before the display had a size; a size was put in front \
             of it (the display model could not redraw its beginning)"
        ),
        Some(export::GuacStart::AsRecorded) | None => {}
    }
    if summary.end == Some(EventsEnd::Truncated) {
        eprintln!(
            "warning: the recording is unfinalised; exported the {} events of its complete chunks",
            summary.events
        );
    }
    Ok(())
}

enum KeyMaterial {
    Secret(ResourceSecret),
    X25519(RecipientSecretKey),
}

impl KeyMaterial {
    fn unlock(&self) -> Unlock<'_> {
        match self {
            Self::Secret(s) => Unlock::ResourceSecret(s),
            Self::X25519(k) => Unlock::Recipient(k),
        }
    }
}

fn load_key(args: &KeyArgs) -> anyhow::Result<Option<KeyMaterial>> {
    if let Some(path) = &args.secret_file {
        let text = read_key_file(path)?;
        let secret = ResourceSecret::from_base64(&text)
            .with_context(|| format!("reading the resource secret from {}", path.display()))?;
        return Ok(Some(KeyMaterial::Secret(secret)));
    }
    if let Some(var) = &args.secret_env {
        let text = Zeroizing::new(
            std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?,
        );
        let secret = ResourceSecret::from_base64(&text)
            .with_context(|| format!("reading the resource secret from ${var}"))?;
        return Ok(Some(KeyMaterial::Secret(secret)));
    }
    if let Some(path) = &args.x25519_key {
        let key = RecipientSecretKey::from_text(&read_key_file(path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(Some(KeyMaterial::X25519(key)));
    }
    Ok(None)
}

fn read_key_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = Zeroizing::new(String::new());
    file.take(u64::try_from(MAX_KEY_FILE_LEN).unwrap_or(u64::MAX) + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() > MAX_KEY_FILE_LEN {
        bail!("{} is too large for a key file", path.display());
    }
    Ok(text)
}

/// Opens `path` with the key `key` names, checked as `export` checks it (what does not
/// verify is not read): for commands that read a recording's events themselves
/// (`ztproxy recording play`).
pub fn open_unlocked(path: &Path, key: &KeyArgs) -> anyhow::Result<RecordingReader<File>> {
    let mut reader = open(path)?;
    let Some(material) = load_key(key)? else {
        bail!("a key is needed: --secret-file, --secret-env or --x25519-key");
    };
    reader.unlock(material.unlock())?;
    if let Err(error) = reader.verify(&VerifyOptions::default()) {
        bail!("{} does not verify: {error}", path.display());
    }
    Ok(reader)
}

fn open(path: &Path) -> anyhow::Result<RecordingReader<File>> {
    RecordingReader::open_path(path).with_context(|| format!("{}", path.display()))
}

fn open_output(
    path: &Path,
    force: bool,
    created: &mut Vec<PathBuf>,
) -> anyhow::Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufWriter::new(io::stdout().lock())));
    }
    let file = create_output(path, force)?;
    created.push(path.to_path_buf());
    Ok(Box::new(BufWriter::with_capacity(OUTPUT_BUFFER, file)))
}

fn create_output(path: &Path, force: bool) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Parses `90`, `1.5` (seconds) or a humantime duration such as `2m` or `1h2m3s`.
fn parse_offset(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn start_time(h: &Header) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(h.start_unix_micros))
        .to_string()
}

fn identity_fingerprint(h: &Header) -> Option<String> {
    let bytes = h.identity.as_ref()?;
    Some(match IdentityPublicKey::from_bytes(bytes) {
        Ok(k) => k.fingerprint().to_string(),
        Err(_) => "invalid key".into(),
    })
}

fn describe_wrap(w: &KeyWrap) -> String {
    match w {
        KeyWrap::ResourceSecret { .. } => "resource secret".into(),
        KeyWrap::X25519 { key_id, .. } => format!("x25519 {key_id}"),
        KeyWrap::Unknown { kind } => format!("unknown type {kind}"),
        _ => "a newer key wrap".into(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

const OUTPUT_BUFFER: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_offset("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_offset("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_offset("-1").is_err());
        assert!(parse_offset("soon").is_err());
    }

    #[test]
    fn secret_sources_are_exclusive() {
        let r = Cli::try_parse_from([
            "zt-recording",
            "verify",
            "f",
            "--secret-file",
            "a",
            "--x25519-key",
            "b",
        ]);
        assert!(r.is_err());
    }
}
