//! `downtime ca`: create (once) the local certificate authority that issues the leaves of
//! TLS proxies and of the forward proxy's interception, and say how to trust it.

use std::path::PathBuf;
use std::process::ExitCode;

use downtime_proxy::tls::{LocalCa, default_ca_dir};

/// Where the CA is and how to trust it, or (`--pem`) its certificate alone.
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// The CA's directory (default: $DOWNTIME_CA_DIR, else ~/.local/share/downtime/ca).
    #[arg(long, value_name = "DIR", env = "DOWNTIME_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Print the CA certificate (PEM) and nothing else.
    #[arg(long)]
    pub pem: bool,
}

/// The lines that make the common runtimes trust `cert`.
pub fn trust_lines(cert: &std::path::Path) -> String {
    let c = cert.display();
    format!(
        "  export SSL_CERT_FILE={c}          # OpenSSL-based clients (Ruby, PHP, Go on Linux)\n\
         \x20 export REQUESTS_CA_BUNDLE={c}     # Python requests\n\
         \x20 export NODE_EXTRA_CA_CERTS={c}    # Node.js\n\
         \x20 export CURL_CA_BUNDLE={c}         # curl\n\
         \x20 keytool -importcert -noprompt -alias downtime -file {c} -cacerts -storepass changeit   # Java\n"
    )
}

/// Runs `downtime ca`: exit 0, or 2 when the CA cannot be opened or created.
pub fn run(args: CaArgs) -> ExitCode {
    let dir = args.ca_dir.unwrap_or_else(default_ca_dir);
    let existed = dir.join("downtime-ca.pem").exists();
    let ca = match LocalCa::open(&dir) {
        Ok(ca) => ca,
        Err(e) => {
            eprintln!("downtime ca: {e}");
            return ExitCode::from(2);
        }
    };
    if args.pem {
        print!("{}", ca.cert_pem());
        return ExitCode::SUCCESS;
    }
    let cert = ca.cert_path();
    let verb = if existed { "is" } else { "was created" };
    println!("downtime's local CA {verb} in {}", dir.display());
    println!("certificate: {}", cert.display());
    println!(
        "key:         {} (readable by you only)",
        dir.join("downtime-ca-key.pem").display()
    );
    println!();
    println!("Trust it in the shell that runs your app:");
    print!("{}", trust_lines(&cert));
    ExitCode::SUCCESS
}
