//! The two views of the ruleset IR: nft text ([`render`]) and a netlink batch ([`netlink`]).

pub mod netlink;
pub mod render;
