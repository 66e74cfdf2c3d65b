use page_cache::PageCache;

#[test]
fn write_read_sync_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::new(1 << 20).unwrap();
    let f = cache.create(&path).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    f.write_all_at(&data, 10).unwrap();
    let mut back = vec![0; data.len()];
    f.read_exact_at(&mut back, 10).unwrap();
    assert_eq!(back, data);
    f.sync_all().unwrap();
    let disk = std::fs::read(&path).unwrap();
    assert_eq!(&disk[10..], &data[..]);
    assert_eq!(&disk[..10], &[0; 10]);
    cache.check_invariants();
    drop(f);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("big"), &big).unwrap();
    let g = cache.open(dir.path().join("big")).unwrap();
    let mut buf = vec![0; big.len()];
    g.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, big);
    println!("{}", cache.stats());
    cache.check_invariants();
}
