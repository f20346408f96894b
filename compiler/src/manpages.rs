//! Man pages for a clap command tree, shared by `comfyc man` and `comfyd man`.

/// `NAME.1` for the command and one page per subcommand, named as git names its own
/// (`comfyc-nodes-pull.1`), the command's own page first.
pub fn render(mut cmd: clap::Command) -> Vec<(String, Vec<u8>)> {
    fn pages(cmd: &clap::Command, into: &mut Vec<(String, Vec<u8>)>) {
        // After `build`, a subcommand's display name is `comfyc-nodes-pull`.
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
        let mut buf = Vec::new();
        // Writing into memory cannot fail.
        let _ = clap_mangen::Man::new(cmd.clone()).render(&mut buf);
        into.push((format!("{name}.1"), buf));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            pages(sub, into);
        }
    }
    cmd.build();
    let mut all = Vec::new();
    pages(&cmd, &mut all);
    all
}

/// Writes `pages` into `dir` (created when missing), each atomically; the error names the path.
pub fn write(dir: &std::path::Path, pages: &[(String, Vec<u8>)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    for (name, page) in pages {
        let path = dir.join(name);
        crate::fsutil::write_atomic(&path, page)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    }
    Ok(())
}
