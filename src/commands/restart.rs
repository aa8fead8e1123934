//! `restart`: resolve every name, compile every account, apply as one transaction.

use anyhow::Result;

use super::{Ctx, Dns, Outcome, apply, build};
use crate::cli::RestartArgs;
use crate::nft::render;

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
    apply(ctx, &b, &lock, args.force)?;
    Ok(b.outcome())
}
