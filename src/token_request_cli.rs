//! `pgward token request`: ask a running pgward for a token issued only
//! once approvers agree, wait for their decision, and print the token
//! (docs/identity.md, "Tokens on approval").

use crate::approvals_cli::{path_id, Api, Connection};
use anyhow::bail;
use clap::Args;
use serde_json::json;
use std::time::{Duration, Instant};

/// `pgward token request` arguments.
#[derive(Args, Debug)]
pub struct RequestArgs {
    #[command(flatten)]
    conn: Connection,
    /// The token user the token logs in as (a [[tokens.requests]] subject).
    #[arg(long)]
    subject: Option<String>,
    /// The database it may open.
    #[arg(long)]
    database: Option<String>,
    /// Its lifetime, e.g. 30m.
    #[arg(long, default_value = "15m")]
    ttl: String,
    /// Why it is needed, shown to approvers (required).
    #[arg(long)]
    reason: Option<String>,
    /// How long to wait for the decision before giving up (the ticket
    /// stays; `--collect ID` picks it up later).
    #[arg(long, default_value = "15m")]
    wait: String,
    /// Collect the token of an earlier request instead of asking again.
    #[arg(long, conflicts_with_all = ["subject", "database", "reason"])]
    collect: Option<String>,
}

/// Asks (or picks up an earlier ticket), waits, and prints the token.
pub async fn request(args: RequestArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.conn)?;
    let wait = pgward::config::units::parse_duration(&args.wait)
        .map_err(|m| anyhow::anyhow!("--wait: {m}"))?;
    let id = match &args.collect {
        Some(id) => path_id(id)?.to_owned(),
        None => {
            let (Some(subject), Some(database), Some(reason)) =
                (&args.subject, &args.database, &args.reason)
            else {
                bail!("give --subject, --database and --reason (or --collect ID)");
            };
            let body = json!({
                "subject": subject,
                "database": database,
                "ttl": args.ttl,
                "reason": reason,
            });
            let t = api.call("POST", "/api/tokens/requests", Some(body)).await?;
            let id = t["id"].as_str().unwrap_or_default().to_owned();
            eprintln!(
                "token request: ticket {id} ({}), waiting for approval",
                t["page"].as_str().unwrap_or("-")
            );
            id
        }
    };
    let path = format!("/api/tokens/requests/{}", path_id(&id)?);
    let until = Instant::now() + wait;
    loop {
        let t = api.call("GET", &path, None).await?;
        match t["state"].as_str().unwrap_or_default() {
            "pending" => {}
            "approved" => break,
            other => bail!(
                "ticket {id} is {other}: {}",
                t["end_reason"].as_str().unwrap_or("no token")
            ),
        }
        if Instant::now() >= until {
            bail!("no decision on ticket {id} within --wait; collect it later with --collect {id}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let issued = api
        .call("POST", &format!("{path}/collect"), Some(json!({})))
        .await?;
    eprintln!(
        "ticket {id} approved: jti {} expires {}",
        issued["jti"].as_str().unwrap_or("-"),
        issued["expires"].as_str().unwrap_or("-")
    );
    println!("{}", issued["token"].as_str().unwrap_or_default());
    Ok(())
}
