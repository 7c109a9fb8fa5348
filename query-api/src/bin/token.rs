//! `pulse-token`: mints an HS256 token for the query API with the secret it
//! verifies them with, for development, scripts and tests. Production
//! tokens come from the identity provider (RS256, JWKS).

use std::path::PathBuf;

use clap::Parser;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pulse_query_api::auth::Role;

#[derive(Parser, Debug)]
#[command(version, about = "Mints an HS256 token for the Pulse query API")]
struct Args {
    /// File holding the shared HS256 secret (the API's setting of the same name).
    #[arg(long, env = "PULSE_JWT_HS256_SECRET_FILE")]
    jwt_hs256_secret_file: PathBuf,
    #[arg(long)]
    tenant: String,
    #[arg(long, value_enum, default_value = "dashboard")]
    role: RoleArg,
    /// Who the token is for (`sub`).
    #[arg(long, default_value = "pulse-token")]
    subject: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl_s: i64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Analyst,
    Dashboard,
    Admin,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = std::fs::read(&args.jwt_hs256_secret_file).map_err(|e| {
        anyhow::anyhow!("cannot read {}: {e}", args.jwt_hs256_secret_file.display())
    })?;
    let role = match args.role {
        RoleArg::Analyst => Role::Analyst,
        RoleArg::Dashboard => Role::Dashboard,
        RoleArg::Admin => Role::Admin,
    };
    let claims = serde_json::json!({
        "sub": args.subject,
        "tenant": args.tenant,
        "role": role,
        "exp": pulse_common::clock::now_ms() / 1000 + args.ttl_s,
    });
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.trim_ascii()),
    )?;
    println!("{token}");
    Ok(())
}
