//! The store checker: reads every record of a roomcast data directory, reports what is corrupt
//! or inconsistent, and can copy everything readable into a new directory that opens cleanly.
//!
//! ```sh
//! cargo run --release --example store_check -- DIR                     # check
//! cargo run --release --example store_check -- DIR --salvage NEW_DIR    # check and salvage
//! ```
//!
//! Run it on a directory that no engine has open. Exit status: 0 if the store is clean (or was
//! salvaged), 1 if it has problems, 2 if it cannot be read at all (the cause is printed).

use std::error::Error;
use std::path::PathBuf;

fn usage() -> ! {
    eprintln!("usage: store_check DIR [--salvage NEW_DIR]");
    std::process::exit(2)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (dir, salvage_to) = match argv.as_slice() {
        [dir] => (PathBuf::from(dir), None),
        [dir, flag, to] if flag == "--salvage" => (PathBuf::from(dir), Some(PathBuf::from(to))),
        _ => usage(),
    };
    let result = match &salvage_to {
        Some(to) => roomcast::store::salvage(&dir, to),
        None => roomcast::store::check(&dir),
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("store_check: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::exit(2);
        }
    };
    println!(
        "{}: {} rooms, {} messages, {} local copies, {} super admins readable",
        dir.display(),
        report.rooms,
        report.messages,
        report.copies,
        report.super_admins
    );
    for p in &report.problems {
        println!("  problem: {}: {}", p.record, p.reason);
    }
    match &salvage_to {
        Some(to) => {
            println!(
                "salvaged {} records into {} (it opens cleanly)",
                report.salvaged,
                to.display()
            );
        }
        None if report.is_clean() => println!("clean"),
        None => {
            println!(
                "{} problems; `--salvage NEW_DIR` copies what is readable",
                report.problems.len()
            );
            std::process::exit(1);
        }
    }
}
