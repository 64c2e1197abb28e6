//! Child command lines built from the children's clap `Args` structs, so that one place per
//! child kind knows its flags; the tests parse every kind's command line back with clap.

use std::ffi::OsString;

use clap::ValueEnum;

/// A child's clap arguments, turned back into the command line that re-executes this binary as
/// that child.
pub trait ChildArgs {
    /// The hidden subcommand that runs this child.
    const SUBCOMMAND: &'static str;

    /// Appends the flags that clap parses back into `self`.
    fn push_flags(&self, argv: &mut Argv);

    /// The child's whole command line (after the program): the subcommand, then the flags.
    fn to_args(&self) -> Vec<OsString> {
        let mut argv = Argv(vec![Self::SUBCOMMAND.into()]);
        self.push_flags(&mut argv);
        argv.0
    }
}

/// A command line being built, one `--flag value` at a time.
#[derive(Debug)]
pub struct Argv(Vec<OsString>);

impl Argv {
    /// `--flag value`.
    pub fn value(&mut self, flag: &str, value: impl ToString) -> &mut Self {
        self.0.extend([flag.into(), value.to_string().into()]);
        self
    }

    /// `--flag value` when there is a value; nothing otherwise (clap's `None`).
    pub fn option(&mut self, flag: &str, value: Option<impl ToString>) -> &mut Self {
        if let Some(value) = value {
            self.value(flag, value);
        }
        self
    }

    /// `--flag` when `on`.
    pub fn switch(&mut self, flag: &str, on: bool) -> &mut Self {
        if on {
            self.0.push(flag.into());
        }
        self
    }

    /// `--flag a,b,c` (a list clap splits at commas).
    pub fn list<T: ToString>(&mut self, flag: &str, values: &[T]) -> &mut Self {
        let joined = values.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        self.value(flag, joined)
    }

    /// `--flag name`, the name clap gives `value`. A variant clap skips has none: the flag gets
    /// an empty value, which the child refuses.
    pub fn value_enum(&mut self, flag: &str, value: &impl ValueEnum) -> &mut Self {
        let name = value.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
        self.value(flag, name)
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use clap::{Parser, ValueEnum};

    use super::ChildArgs;
    use crate::bench::{self, Mode, Test, Transport};
    use crate::stress;
    use crate::{Cli, Command};

    /// Parses `args`'s command line with the real CLI and hands the subcommand to `pick`.
    fn round_trip<A: ChildArgs + Debug + PartialEq>(args: &A, pick: impl Fn(Command) -> Option<A>) {
        let argv = std::iter::once("lapce-ipc".into()).chain(args.to_args());
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{:?}: {e}", args.to_args()));
        let parsed =
            pick(cli.command).unwrap_or_else(|| panic!("{:?} ran another subcommand", args.to_args()));
        assert_eq!(&parsed, args, "{:?}", args.to_args());
    }

    #[test]
    fn bench_server_args_round_trip() {
        let mut n = 0;
        for &transport in Transport::value_variants() {
            for &mode in Mode::value_variants() {
                for &test in Test::value_variants() {
                    n += 1;
                    let some = n % 2 == 0;
                    let args = bench::ServerArgs {
                        warmup: n,
                        count: 2 * n,
                        ring_capacity: some.then_some(4096),
                        cpu: some.then_some(1),
                        parent_pid: (!some).then_some(42),
                        metrics: some,
                        scale_clients: some.then_some(1000),
                        threads: 3,
                        ..bench::ServerArgs::new(transport, mode, format!("name-{n}"), test, 64 + n as usize)
                    };
                    round_trip(&args, |c| match c {
                        Command::BenchServer(a) => Some(a),
                        _ => None,
                    });
                }
            }
        }
    }

    /// The defaults of [`bench::ServerArgs::new`] are clap's.
    #[test]
    fn bench_server_args_defaults_are_claps() {
        let argv =
            "lapce-ipc bench-server --transport lapce-ipc --mode spin --name x --test echo --payload 8";
        let Command::BenchServer(parsed) = Cli::try_parse_from(argv.split(' ')).unwrap().command else {
            panic!("not bench-server")
        };
        assert_eq!(parsed, bench::ServerArgs::new(Transport::Lapce, Mode::Spin, "x".into(), Test::Echo, 8));
    }

    #[test]
    fn bench_scale_client_args_round_trip() {
        for (i, &api) in bench::ScaleClient::value_variants().iter().enumerate() {
            let args = bench::ScaleClientArgs {
                name: format!("scale-{i}"),
                connections: 250 + i,
                inflight: 4 + i,
                secs: 0.1 + i as f64 / 3.0,
                parent_pid: (i == 0).then_some(7),
                api,
            };
            round_trip(&args, |c| match c {
                Command::BenchScaleClient(a) => Some(a),
                _ => None,
            });
        }
    }

    #[test]
    fn stress_server_args_round_trip() {
        for parent_pid in [None, Some(99)] {
            let args = stress::ServerArgs { name: "stress-x".into(), max_connections: 1064, parent_pid };
            round_trip(&args, |c| match c {
                Command::StressServer(a) => Some(a),
                _ => None,
            });
        }
    }

    #[test]
    fn stress_client_args_round_trip() {
        for (payloads, parent_pid) in [(vec![64], None), (vec![256, 4096, 16 * 1024], Some(5))] {
            let args = stress::ClientArgs {
                name: "stress-y".into(),
                connections: 150,
                lanes: 2,
                requests: 30,
                payloads,
                max_connections: 214,
                parent_pid,
            };
            round_trip(&args, |c| match c {
                Command::StressClient(a) => Some(a),
                _ => None,
            });
        }
    }
}
