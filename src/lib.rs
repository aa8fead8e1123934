//! pbxwall: a whitelist firewall manager for VoIP PBX servers on nftables.
#![deny(unsafe_code)]

pub mod addrset;
pub mod cli;
pub mod commands;
pub mod compile;
pub mod model;
pub mod nft;
pub mod ruleset;
pub mod store;
