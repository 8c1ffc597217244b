//! Another Rust service verifying an API key with `account_infra::Verifier` (no HTTP hop):
//! `DATABASE_URL=sqlite://account-api.db cargo run -p account-infra --example verify_key -- mem_live_...`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let key = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: verify_key <API key>"))?;
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://account-api.db".to_owned());
    let verifier = account_infra::Verifier::connect(&url).await?;
    let verdict = verifier.verify(&key, &[], None).await?;
    match verdict.principal.as_ref().filter(|_| verdict.is_valid()) {
        Some(p) => println!("valid: organization {}, key {} ({})", p.org_id(), p.key_id(), p.environment()),
        None => println!("refused: {}", verdict.code.as_str()),
    }
    verifier.shutdown().await // writes the key's last_used_at
}
