//! The standalone source: every `*.yaml`/`*.yml` file of a directory.

use std::path::{Path, PathBuf};

use super::{LoadError, parse_documents};
use crate::objects::ObjectSet;

/// The YAML files of `dir`, sorted so errors and duplicates are reported stably.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every object of every YAML file in `dir`. Any error refuses the whole directory,
/// so a half-written edit never becomes the running state; every error is reported.
pub fn load_dir(dir: &Path) -> Result<ObjectSet, Vec<LoadError>> {
    let files = yaml_files(dir).map_err(|e| {
        vec![LoadError {
            file: dir.display().to_string(),
            document: 0,
            path: String::new(),
            message: e.to_string(),
        }]
    })?;
    let mut set = ObjectSet::default();
    let mut errors = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(LoadError {
                    file: name,
                    document: 0,
                    path: String::new(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        match parse_documents(&name, &text) {
            Ok(objects) => {
                for (document, o) in objects {
                    if let Err(message) = set.insert(o) {
                        errors.push(LoadError {
                            file: name.clone(),
                            document,
                            path: "metadata.name".into(),
                            message,
                        });
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}
