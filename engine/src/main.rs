fn main() {
    eprintln!("ringmq: the broker engine is not built yet; see README.md");
    std::process::exit(2);
}
