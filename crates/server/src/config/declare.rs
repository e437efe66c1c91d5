//! The macro that turns the one list of settings (`settings.rs`) into everything that has to
//! name every setting: the command line and environment (clap), the config file (serde),
//! flags-over-file precedence, the resolved structs and the reload diffs.
//!
//! Each entry reads
//!
//! ```text
//! /// Help text, shown by `capf serve --help`.
//! #[arg(long, env = "CAPF_NAME")]
//! live name: GivenType => ResolvedType;
//! ```
//!
//! where `live` (SIGHUP applies it) or `restart` (read once, at start) is mandatory. The class
//! decides which struct holds the resolved value: a `live` setting is a field of
//! [`LiveSettings`](super::LiveSettings), which a reload swaps in whole and sessions read; a
//! `restart` one is a field of [`Settings`](super::Settings), which keeps its value from the
//! start. So code cannot read a restart setting as if it were live, and the two reload lists
//! (`LiveSettings::changes`, `Settings::needing_restart`) are generated from the same fields:
//! a setting cannot be missing from both or present in both.

macro_rules! declare_settings {
    // Sorts the entries into the two resolved structs by class, keeping their order. One
    // rule per class, so an entry without a valid class matches none and fails to compile.
    (@split [$($restart:tt)*] [$($live:tt)*]
        restart [$($doc:literal)*] $name:ident: $resolved:ty; $($rest:tt)*) => {
        declare_settings!(@split
            [$($restart)* [$($doc)*] $name: $resolved;] [$($live)*] $($rest)*);
    };
    (@split [$($restart:tt)*] [$($live:tt)*]
        live [$($doc:literal)*] $name:ident: $resolved:ty; $($rest:tt)*) => {
        declare_settings!(@split
            [$($restart)*] [$($live)* [$($doc)*] $name: $resolved;] $($rest)*);
    };
    (@split
        [$([$($rdoc:literal)*] $rname:ident: $rty:ty;)*]
        [$([$($ldoc:literal)*] $lname:ident: $lty:ty;)*]) => {
        /// Resolved settings. Those read only at start are fields here; what SIGHUP may
        /// change is in [`LiveSettings`].
        #[derive(Debug, Clone)]
        pub struct Settings {
            $($(#[doc = $rdoc])* pub $rname: $rty,)*
            /// What SIGHUP may change. These are the values at start: running code reads the
            /// current ones from [`LiveConfig`](crate::config::LiveConfig).
            pub live: LiveSettings,
        }

        /// The settings SIGHUP reloads. Each session (and each API request) reads them once,
        /// at its start, so one session never mixes old and new values.
        #[derive(Debug, Clone, PartialEq)]
        pub struct LiveSettings {
            $($(#[doc = $ldoc])* pub $lname: $lty,)*
        }

        /// Names of the settings a reload leaves as they were at start.
        pub const RESTART_SETTINGS: &[&str] = &[$(stringify!($rname)),*];

        /// Names of the settings a reload applies.
        pub const LIVE_SETTINGS: &[&str] = &[$(stringify!($lname)),*];

        impl Settings {
            /// Settings, named as in the config file, that differ in `new` but are read only
            /// at start. Names only: the database URL may carry a password.
            pub fn needing_restart(&self, new: &Settings) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(
                    if self.$rname != new.$rname {
                        changed.push(stringify!($rname));
                    }
                )*
                changed
            }
        }

        impl LiveSettings {
            /// What differs in `new`, named as in the config file. None of these values is
            /// secret.
            pub fn changes(&self, new: &LiveSettings) -> Vec<$crate::config::Change> {
                use $crate::config::reload::LogValue;
                let mut changes = Vec::new();
                $(
                    if self.$lname != new.$lname {
                        changes.push($crate::config::Change {
                            name: stringify!($lname),
                            old: self.$lname.log_value(),
                            new: new.$lname.log_value(),
                        });
                    }
                )*
                changes
            }
        }
    };

    (@class live) => { $crate::config::Reload::Live };
    (@class restart) => { $crate::config::Reload::Restart };

    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $class:ident $name:ident: $given:ty => $resolved:ty;
    )*) => {
        /// Flags of `capf serve`, and the same settings as the TOML file spells them (the file
        /// is read into this struct too). Every one can come from the command line, the
        /// environment or the config file.
        #[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ServeArgs {
            /// TOML file with settings (keys as the long flags, with '_' for '-').
            #[arg(long, env = "CAPF_CONFIG")]
            // A file does not name another file.
            #[serde(skip)]
            pub config: Option<std::path::PathBuf>,
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $name: Option<$given>,
            )*
        }

        impl ServeArgs {
            /// Each setting from `self` (flags and environment: clap merges those two) where
            /// given, else from `file`.
            pub(super) fn over(self, file: ServeArgs) -> ServeArgs {
                ServeArgs {
                    config: self.config,
                    $($name: self.$name.or(file.$name),)*
                }
            }
        }

        /// Every setting, in the order of `capf serve --help`, and whether SIGHUP applies it.
        pub const SETTINGS: &[$crate::config::Setting] = &[$(
            $crate::config::Setting {
                name: stringify!($name),
                reload: declare_settings!(@class $class),
            },
        )*];

        declare_settings!(@split [] [] $($class [$($doc)*] $name: $resolved;)*);
    };
}

pub(super) use declare_settings;
