//! `herd dashboard`: prints the link to the Control node's web dashboard with the API token
//! in its fragment (`.../dashboard#token=...`), which browsers keep to themselves: the page
//! moves it into the tab's session storage and out of the address bar.

use std::path::Path;
use std::process::{Command, Stdio};

use clap::Args;

use crate::CliConfig;

/// `herd dashboard`
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Also open the link in the desktop's browser (xdg-open; the link, token included, is on
    /// its command line for a moment).
    #[arg(long)]
    pub open: bool,
}

/// Prints the link for the Herd config at `config` (default: [`crate::config::default_path`]).
pub fn dashboard(config: Option<&Path>, args: DashboardArgs) -> anyhow::Result<()> {
    let config = CliConfig::load(&config.map(Path::to_path_buf).unwrap_or_else(crate::config::default_path))?;
    let url = dashboard_url(&config.api, &config.token);
    println!("{url}");
    if args.open {
        let opened = Command::new("xdg-open")
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match opened {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("xdg-open failed ({s}): open the link above in a browser"),
            Err(e) => eprintln!("cannot run xdg-open ({e}): open the link above in a browser"),
        }
    }
    Ok(())
}

/// The dashboard's address on the API at `api`, with `token` percent-encoded in the fragment.
pub fn dashboard_url(api: &str, token: &str) -> String {
    let mut fragment = String::with_capacity(token.len());
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            fragment.push(b as char);
        } else {
            fragment.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{}/dashboard#token={fragment}", api.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::dashboard_url;

    #[test]
    fn the_token_goes_in_the_fragment_percent_encoded() {
        assert_eq!(dashboard_url("http://127.0.0.1:7700", "ab12"), "http://127.0.0.1:7700/dashboard#token=ab12");
        assert_eq!(dashboard_url("http://h:1/", "a b&c=d/é"), "http://h:1/dashboard#token=a%20b%26c%3Dd%2F%C3%A9");
    }
}
