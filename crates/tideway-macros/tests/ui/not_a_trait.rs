use tideway_macros::service;

#[service]
struct Echo;

fn main() {}
