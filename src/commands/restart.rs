//! `restart`: resolve every name, compile every account, apply as one transaction.

use anyhow::Result;
use clap::Args;

use super::{Ctx, Dns, Outcome, apply, build};
use crate::nft::render;

/// `restart`: resolve every name, compile every account, apply as one transaction.
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Print the nftables ruleset instead of applying it (no root needed)
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even if the ruleset would cut off this SSH session's client
    #[arg(long)]
    pub force: bool,
}

/// `restart [--dry-run] [--force]`.
pub fn restart(ctx: &Ctx, args: RestartArgs) -> Result<Outcome> {
    if args.dry_run {
        let b = build(ctx, None, Dns::Query)?;
        b.report_problems(ctx);
        out!("{}", render::render(&b.ruleset));
        return Ok(b.outcome());
    }
    let lock = ctx.lock()?;
    let b = build(ctx, Some(&lock), Dns::Query)?;
    b.report_problems(ctx);
    let applied = apply(ctx, &b, &lock, args.force)?;
    Ok(b.outcome().worst(applied))
}
