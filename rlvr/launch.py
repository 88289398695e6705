"""`rlvr launch [accelerate launch options] train|eval|sweep ...`: `accelerate launch` with rlvr's manners.

It is `accelerate launch [options] -m rlvr train ...`, run in this process through accelerate's own
parser and launcher (so every accelerate option and config file works the same), with one difference:
when a worker fails, the workers have already said why (rlvr's one line, or a traceback for a bug),
so the launcher's own report (torch elastic's ChildFailedError traceback and its log lines) is not
printed after it, and the exit code is the failing worker's (2 for a config error, 1 for a run error,
128 + N for a signal), where `accelerate launch` exits 1 for every failure. A worker killed by a
signal it did not handle (the OOM killer's SIGKILL, a segfault) has said nothing: that gets one line.
"""

from __future__ import annotations

import logging
import sys

COMMANDS = ("train", "eval", "sweep", "report", "build-base")


def split(argv: list[str], parser) -> tuple[list[str], list[str]]:
    """accelerate's options before the rlvr command, the command and its arguments after: the first
    token naming a command that is not the value of an option taking one."""
    takes_value = {s for a in parser._actions if a.option_strings and a.nargs != 0 for s in a.option_strings}
    for i, tok in enumerate(argv):
        if tok in COMMANDS and not (i and argv[i - 1] in takes_value):
            return argv[:i], argv[i:]
    return argv, []


def main(argv: list[str]) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    parser = launch_command_parser()
    parser.prog = "rlvr launch"
    options, command = split(argv, parser)
    if not command:
        print(
            "rlvr launch: name the rlvr command after accelerate's options, e.g. "
            "rlvr launch --config_file recipes/accelerate/ddp.yaml train recipes/tiny/grpo.yaml",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args([*options, "-m", "rlvr", *command])
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its report repeats the workers'
    try:
        launch_command(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode >= 0:
            return failure.exitcode
        print(
            f"rlvr launch: rank {rank} was killed by {failure.signal_name()} (pid {failure.pid}) without a word "
            "(out of memory? see dmesg); the latest checkpoint (if any) resumes the run",
            file=sys.stderr,
        )
        return 128 - failure.exitcode
    except SignalException as e:  # the launcher itself got SIGTERM/SIGINT: the workers were sent it too
        return 128 + int(e.sigval)
    return 0
