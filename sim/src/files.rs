//! The server's folders (`input/`, `output/`, `temp/` under `Config::root`) and ComfyUI's path
//! rules over them: annotated names (`x.png [output]`), `SaveImage` counters continuing per
//! prefix, and refusing paths that leave their folder.
//!
//! Paths are checked lexically, as ComfyUI does with `os.path.normpath`/`commonpath`.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub(crate) input: PathBuf,
    pub(crate) output: PathBuf,
    pub(crate) temp: PathBuf,
}

impl Dirs {
    /// Creates the folders; like ComfyUI at startup, `temp/` starts empty.
    pub(crate) fn create(root: &Path) -> std::io::Result<Dirs> {
        std::fs::create_dir_all(root)?;
        let root = normalize(&std::path::absolute(root)?);
        let dirs = Dirs {
            input: root.join("input"),
            output: root.join("output"),
            temp: root.join("temp"),
        };
        if dirs.temp.exists() {
            std::fs::remove_dir_all(&dirs.temp)?;
        }
        for dir in [&dirs.input, &dirs.output, &dirs.temp] {
            std::fs::create_dir_all(dir)?;
        }
        // A ComfyUI checkout ships `input/example.png`, so LoadImage always lists it.
        let example = dirs.input.join("example.png");
        if !example.exists() {
            let png = crate::image::Images::solid(64, 64, 1, 0x808080)
                .png(0, &[])
                .map_err(std::io::Error::other)?;
            std::fs::write(example, png)?;
        }
        Ok(dirs)
    }

    /// `folder_paths.get_directory_by_type`.
    pub(crate) fn by_type(&self, kind: &str) -> Option<&Path> {
        match kind {
            "input" => Some(&self.input),
            "output" => Some(&self.output),
            "temp" => Some(&self.temp),
            _ => None,
        }
    }

    /// `folder_paths.annotated_filepath` + `get_annotated_filepath`: `name [output]` names a
    /// file in `output/`; a bare name is in `default`.
    pub(crate) fn annotated<'a>(&'a self, name: &'a str, default: &'a Path) -> (&'a str, &'a Path) {
        for (suffix, dir) in [
            (" [output]", &self.output),
            (" [input]", &self.input),
            (" [temp]", &self.temp),
        ] {
            if let Some(stripped) = name.strip_suffix(suffix) {
                return (stripped, dir);
            }
        }
        (name, default)
    }

    /// Where an input image named in a prompt lives, refusing names that leave its folder.
    pub(crate) fn input_file(&self, name: &str) -> Option<PathBuf> {
        let (name, dir) = self.annotated(name, &self.input);
        inside(dir, &dir.join(name))
    }
}

/// `os.path.normpath` on an absolute path, without touching the file system.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `path` normalized, if it stays inside `dir`.
pub(crate) fn inside(dir: &Path, path: &Path) -> Option<PathBuf> {
    let path = normalize(path);
    path.starts_with(dir).then_some(path)
}

/// The longest common leading path (`os.path.commonpath`).
fn common(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

/// Where `SaveImage`/`PreviewImage` write, as `folder_paths.get_save_image_path` decides.
#[derive(Debug, Clone)]
pub(crate) struct SavePlan {
    pub(crate) folder: PathBuf,
    pub(crate) filename: String,
    pub(crate) counter: u64,
    pub(crate) subfolder: String,
}

/// Splits a prefix into subfolder and file stem and finds the next counter; the error is
/// ComfyUI's message for a prefix leaving `base`.
pub(crate) fn save_plan(
    prefix: &str,
    base: &Path,
    width: usize,
    height: usize,
) -> Result<SavePlan, String> {
    let prefix = prefix
        .replace("%width%", &width.to_string())
        .replace("%height%", &height.to_string());
    let normal = normpath_str(&prefix);
    let (subfolder, filename) = match normal.rsplit_once('/') {
        Some((dir, file)) => (dir.to_owned(), file.to_owned()),
        None => (String::new(), normal.clone()),
    };
    let full = normalize(&base.join(&subfolder));
    if !full.starts_with(base) {
        let common = common(base, &full);
        return Err(format!(
            "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: {}\n         output_dir: {}\n         commonpath: {}",
            full.display(),
            base.display(),
            common.display()
        ));
    }
    let counter = next_counter(&full, &filename);
    Ok(SavePlan {
        folder: full,
        filename,
        counter,
        subfolder,
    })
}

/// `os.path.normpath` on a relative text path.
fn normpath_str(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// One past the highest counter of `{filename}_{counter}_...` files in `folder`.
fn next_counter(folder: &Path, filename: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 1;
    };
    let stem: Vec<char> = filename.chars().collect();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            let chars: Vec<char> = name.chars().collect();
            if chars.len() <= stem.len()
                || chars[..stem.len()] != stem[..]
                || chars[stem.len()] != '_'
            {
                return None;
            }
            let rest: String = chars[stem.len() + 1..].iter().collect();
            let digits = rest.split('_').next().unwrap_or("");
            Some(digits.trim().parse::<u64>().unwrap_or(0))
        })
        .max()
        .map_or(1, |max| max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_escaping_output_are_refused() {
        let base = Path::new("/srv/sim/output");
        let err = save_plan("../../escape", base, 8, 8)
            .err()
            .unwrap_or_default();
        assert!(err.contains("full_output_folder: /srv\n"), "{err}");
        assert!(err.ends_with("commonpath: /srv"), "{err}");
        let plan = save_plan("a/b/img", base, 8, 8).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.subfolder, "a/b");
        assert_eq!(plan.filename, "img");
    }
}
