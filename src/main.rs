fn main() {
    std::process::exit(braggrun::cli::main());
}
