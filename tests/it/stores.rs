//! The sled stores' memory (issue 19): a full read of a store much larger than the page cache
//! stays near the cache. `govex store check`, run as its own process, reads every entry of a
//! store of about 190 MiB with an 8 MiB cache; sled 0.34 alone would keep every page it read
//! (see `govex_schemas::store::Scan`), and the process would peak above the store's size.

/// Values of 4 KiB: sled's pages then hold few entries, the case where its cache kept most.
const ENTRIES: u32 = 48_000;
const VALUE: usize = 4096;

#[test]
fn a_full_read_of_a_store_far_larger_than_the_cache_stays_near_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let db = govex_schemas::store::open_sled(&data.join("dossier")).unwrap();
        let tree = db.open_tree("records").unwrap();
        let mut value = vec![0u8; VALUE];
        for i in 0..ENTRIES {
            // Every value different, so that nothing is shared or compressible.
            for (j, byte) in value.iter_mut().enumerate() {
                *byte = (i as usize).wrapping_mul(31).wrapping_add(j * 7) as u8;
            }
            tree.insert(i.to_be_bytes(), value.as_slice()).unwrap();
        }
        db.flush().unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["store", "check"])
        .env("GOVEX_DATA_DIR", &data)
        .env("GOVEX_STORAGE__CACHE_MIB", "8")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let stored_mib = f64::from(ENTRIES) * (VALUE + 4) as f64 / f64::from(1 << 20);
    assert!(text.contains(&format!("{} entries, {stored_mib:.1} MiB", ENTRIES + 1)), "every entry read: {text}");
    let peak: f64 = text
        .split("peak memory ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in: {text}"));
    println!("read {stored_mib:.0} MiB with an 8 MiB cache: peak {peak:.0} MiB");
    // The process's own memory (runtime, allocator, sled's page table) and the cache, with room:
    // well under half of what was read.
    assert!(peak < stored_mib * 0.45, "peak {peak} MiB for a {stored_mib:.0} MiB store: {text}");
}
