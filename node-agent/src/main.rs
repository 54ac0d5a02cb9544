fn main() {
    println!("tailor-agent");
}
