fn main() {
    eprintln!("ringmq-bench: the load generator is not built yet; see bench/README.md");
    std::process::exit(2);
}
