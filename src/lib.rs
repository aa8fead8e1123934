//! pbxwall: a whitelist firewall manager for VoIP PBX servers on nftables.
#![deny(unsafe_code)]

pub mod addrset;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod compile;
pub mod cron;
pub mod detect;
pub mod manpages;
pub mod model;
pub mod nft;
pub mod providers;
pub mod resolve;
pub mod ruleset;
pub mod state;
pub mod store;
