"""The ``actorbot`` command: generate a video locally, characters, run the bots, resume, doctor."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bots.adapters import ADAPTERS, Adapter, AdapterUnavailable, Running, configured
from bots.adapters import secrets as adapter_secrets
from bots.logs import configure_logging
from bots.ops import OpsServer, ops_routes
from bots.runtime import Runtime, open_runtime
from config.settings import ConfigError, Settings, load_settings
from core.characters import Characters
from core.errors import ActorbotError, DeliveryError, UserError
from core.i18n import normalize_locale, render, render_for, result_notes
from core.models import DeliveryAddress, EventKind, Job, JobEvent, UserRef, VideoRequest
from core.prompts import character_names
from core.storage import open_storage
from core.storage.types import PortraitState

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CLI = "cli"  # the platform of the local user, and the wording of messages that name commands


def take_output(output: Path, take: int, takes: int) -> Path:
    """Return where take ``take`` of ``takes`` is written: out.mp4, out-2.mp4, ..."""
    return (
        output
        if take == 1 or takes == 1
        else output.with_name(f"{output.stem}-{take}{output.suffix}")
    )


class FileNotifier:
    """Deliver CLI jobs by writing the video to the path the user asked for."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[JobEvent] = asyncio.Queue()

    async def notify(self, event: JobEvent) -> None:
        """Queue the event for the progress display."""
        self.events.put_nowait(event)

    async def deliver(self, job: Job, video: Path) -> None:
        """Copy the video next to its destination, then rename it into place."""
        output = take_output(Path(job.address.extra["output"]), job.take, job.takes)
        partial = output.with_name(output.name + ".part")
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(shutil.copyfile, video, partial)
            os.replace(partial, output)
        except OSError as exc:
            raise DeliveryError(f"cannot write {output}: {exc.strerror}", permanent=True) from exc


def _locale(settings: Settings) -> str:
    return normalize_locale(os.environ.get("LANG") if settings.locale == "en" else settings.locale)


def _user(locale: str) -> UserRef:
    return UserRef(CLI, os.environ.get("USER", "local"), locale=locale)


async def _generate(
    settings: Settings, args: argparse.Namespace, image: bytes, console: Console
) -> int:
    locale = _locale(settings)
    output = Path(args.output).resolve()
    files = FileNotifier()
    async with open_runtime(settings, {"cli": files}) as runtime:
        request = VideoRequest(
            user=_user(locale),
            image=image,
            line=args.line,
            address=DeliveryAddress("cli", "local", extra={"output": str(output)}),
            source_key=f"cli:{uuid.uuid4().hex}",
            seconds=args.duration,
            takes=args.takes,
            seed=args.seed,
            voice=args.voice,
            character=args.character,
        )
        try:
            admission = await runtime.service.submit(request)
        except UserError as exc:
            console.print(
                f"[red]error:[/] {escape(render_for(CLI, exc.key, locale, **exc.params))}"
            )
            return EXIT_FAILED
        if runtime.backend.name == "preview":
            console.print(
                "[yellow]Preview renderer:[/] a local camera move with synthetic speech and "
                "subtitles, not an AI model. Configure a provider backend for real performances."
            )
        parsed = admission.parsed
        console.print(
            f"Line: [bold]{escape(parsed.speech)}[/] ({parsed.language}, "
            f"~{parsed.speech_seconds:.1f} s of speech) → {parsed.seconds} s clip, "
            f"{parsed.takes} take(s)"
        )
        mine = {job.id for job in admission.jobs}
        worker = asyncio.create_task(runtime.worker.run(), name="worker")
        try:
            results = await _follow(files, mine, admission.position, console, locale)
        finally:
            await runtime.worker.stop()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    failed = [job for job, ok in results.items() if not ok]
    for job in admission.jobs:
        if job.id not in failed:
            console.print(f"[green]✓[/] {escape(str(take_output(output, job.take, job.takes)))}")
    return EXIT_FAILED if failed else EXIT_OK


async def _follow(
    files: FileNotifier, mine: set[str], position: int | None, console: Console, locale: str
) -> dict[str, bool]:
    """Show progress until every take of this request is delivered or failed."""
    results: dict[str, bool] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        rows = {
            job_id: progress.add_task(f"take {n}: queued (position {position or '?'})", total=None)
            for n, job_id in enumerate(sorted(mine), start=1)
        }
        while len(results) < len(mine):
            event = await files.events.get()
            job = event.job
            if job.id not in mine:
                continue
            row = rows[job.id]
            label = f"take {job.take}/{job.takes}"
            if event.kind is EventKind.QUEUED:
                progress.update(row, description=f"{label}: queued (position {event.position})")
            elif event.kind is EventKind.STARTED:
                progress.update(row, description=f"{label}: rendering", total=1.0, completed=0)
            elif event.kind is EventKind.PROGRESS and event.progress is not None:
                progress.update(row, description=f"{label}: rendering", completed=event.progress)
            elif event.kind is EventKind.DELIVERING:
                progress.update(row, description=f"{label}: saving", completed=1.0)
            elif event.kind is EventKind.DELIVERED:
                notes = " ".join(result_notes(job.backend, job.retake_reason, locale))
                done = f"{label}: done" + (f" ({escape(notes)})" if notes else "")
                progress.update(row, description=done, total=1.0, completed=1.0)
                results[job.id] = True
            elif event.kind in (EventKind.FAILED, EventKind.CANCELED):
                key = event.error_key or "job.canceled"
                message = render_for(CLI, key, locale, **event.error_params)
                progress.update(row, description=f"{label}: [red]{escape(message)}[/]")
                results[job.id] = False
    return results


async def _create(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    """Draw candidates for a new character, write them to files and save the one picked."""
    locale = _locale(settings)
    user = _user(locale)
    address = DeliveryAddress("cli", user.platform_user_id, extra={"locale": locale})
    async with open_runtime(settings, {}) as runtime:
        portraits = runtime.service.portraits
        try:
            asked = await portraits.create(user, address, args.name, args.description)
            started = render(
                "portrait.started", locale, name=asked.name, count=portraits.count,
                cost=portraits.cost(user),
            )  # fmt: skip
            console.print(escape(started))
            runner = runtime.worker.portraits
            assert runner is not None
            await runner.finish_all()  # this process is the worker for its own request
            portrait = await portraits.portrait(asked.id)
            assert portrait is not None
            if portrait.state is not PortraitState.READY:
                key = portrait.error_key or "portrait.failed"
                message = render_for(CLI, key, locale, name=asked.name)
                console.print(f"[red]error:[/] {escape(message)}")
                return EXIT_FAILED
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            candidates = await portraits.candidates(asked.id)
            for number, jpeg in enumerate(candidates, start=1):
                path = out / f"{asked.name}-{number}.jpg"
                path.write_bytes(jpeg)
                console.print(f"{number}: {escape(str(path))}")
            number = args.pick
            if number is None and sys.stdin.isatty():
                answer = await asyncio.to_thread(
                    input, render("portrait.pick", locale, name=asked.name) + " "
                )
                number = int(answer) if answer.strip().isdigit() else 0
            if not number:
                await portraits.cancel(user, asked.id)
                console.print(escape(render("portrait.canceled", locale)))
                return EXIT_OK
            saved = await portraits.pick(user, asked.id, number)
            console.print(escape(render("portrait.picked", locale, name=saved.name, number=number)))
        except UserError as exc:
            message = render_for(CLI, exc.key, locale, **exc.params)
            console.print(f"[red]error:[/] {escape(message)}")
            return EXIT_FAILED
    return EXIT_OK


async def _character(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    """Save, list, voice or delete the local user's characters."""
    from rich.table import Table

    locale = _locale(settings)
    user = _user(locale)
    if args.action == "create":
        return await _create(settings, args, console)
    async with await open_storage(settings) as storage:
        characters = Characters(
            storage.characters, storage.accounts, settings.characters, settings.images
        )
        try:
            if args.action == "save":
                saved = await characters.save(
                    user, args.name, args.photo_bytes, voice=args.voice, seed=args.seed,
                    description=args.description,
                )  # fmt: skip
                console.print(escape(render("character.saved", locale, name=saved.name)))
            elif args.action == "voice" and args.sample is not None:
                saved = await characters.set_voice_sample(user, args.name, args.sample_bytes)
                console.print(escape(render("character.voice_sample_set", locale, name=saved.name)))
            elif args.action == "voice":
                await characters.set_voice(user, args.name, args.voice)
                name = args.name.removeprefix("@")
                console.print(
                    escape(render("character.voice_set", locale, name=name, voice=args.voice))
                )
            elif args.action == "delete":
                await characters.delete(user, args.name)
                name = args.name.removeprefix("@")
                console.print(escape(render("character.deleted", locale, name=name)))
            else:
                saved_ones = await characters.list(user)
                if not saved_ones:
                    console.print(escape(render_for(CLI, "character.list_empty", locale)))
                    return EXIT_OK
                table = Table(title=f"Characters ({len(saved_ones)}/{characters.limit})")
                for column in ("name", "voice", "seed", "description"):
                    table.add_column(column)
                for one in saved_ones:
                    seed = "" if one.seed is None else str(one.seed)
                    recorded = render("character.voice_recorded", locale)
                    voice = one.voice or (recorded if one.voice_sample else "—")
                    table.add_row(escape(one.name), escape(voice), seed, escape(one.description))
                console.print(table)
        except UserError as exc:
            console.print(
                f"[red]error:[/] {escape(render_for(CLI, exc.key, locale, **exc.params))}"
            )
            return EXIT_FAILED
    return EXIT_OK


async def _resume(settings: Settings, console: Console) -> int:
    files = FileNotifier()
    async with open_runtime(settings, {"cli": files}) as runtime:
        pending = await runtime.storage.jobs.count_unfinished(("cli",))
        console.print(f"Resuming {pending} unfinished local job(s)…")
        await runtime.worker.run_until_idle()
        counts = await runtime.storage.jobs.count_by_state()
    console.print(", ".join(f"{state.value}: {n}" for state, n in sorted(counts.items())))
    return EXIT_OK


async def _run(settings: Settings, console: Console, role: str = "all") -> int:
    adapters = configured(settings)
    if not adapters:
        wanted = " or ".join(f"{adapter.variable} ({adapter.origin})" for adapter in ADAPTERS)
        console.print(
            f"[red]No chat adapter is configured.[/] Set {wanted} in the environment or in "
            "actorbot.toml, then run again. "
            'To make a video without a bot: actorbot generate PHOTO "LINE".'
        )
        return EXIT_USAGE
    async with open_runtime(settings, {"cli": FileNotifier()}) as runtime:
        try:
            return await _serve(runtime, adapters, role)
        except AdapterUnavailable as exc:
            # Details go to the (redacting) log at DEBUG (a URL may quote the token): the
            # operator gets the one line below.
            log.debug("%s", exc, exc_info=exc.__cause__)
            console.print(f"[red]{escape(exc.headline)}[/] {escape(exc.advice)}", soft_wrap=True)
        return EXIT_FAILED


async def _serve(runtime: Runtime, adapters: Sequence[Adapter], role: str = "all") -> int:
    """Run this process's role until SIGINT/SIGTERM.

    ``ingress``: the adapters take platform events in and admit jobs; no worker.
    ``worker``: the worker claims jobs of every configured platform and delivers and edits
    statuses through the platforms' HTTP APIs; no intake. ``all``: both.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    names = [adapter.name for adapter in adapters]
    chats = [adapter.name for adapter in adapters if adapter.chat]
    intake = role in ("ingress", "all")
    started: list[Running] = []
    runtime.adapters.update(dict.fromkeys(names))  # not ready until each has started
    async with contextlib.AsyncExitStack() as stack:
        if runtime.settings.metrics.enabled:
            # First: /healthz answers while the adapters connect, /readyz says they do.
            ops = OpsServer(runtime.settings.metrics, ops_routes(runtime))
            await ops.start()
            stack.push_async_callback(ops.stop)
        # Adapters start first (the worker delivers through them) and stop last.
        for adapter in adapters:
            peers = [name for name in chats if name != adapter.name]
            running = await stack.enter_async_context(adapter.start(runtime, peers, intake))
            running.intake.add_done_callback(lambda _: stop.set())
            started.append(running)
            runtime.adapters[adapter.name] = running
        worker = None
        if role in ("worker", "all"):
            worker = asyncio.create_task(runtime.worker.run(), name="worker")
            # A worker that died must not leave the bot answering "queued" forever.
            worker.add_done_callback(lambda _: stop.set())
        log.info("running adapters (%s): %s", role, ", ".join(names))
        await stop.wait()
        if worker is not None:
            await runtime.worker.stop()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for running in started:
            task = running.intake
            error = task.exception() if task.done() and not task.cancelled() else None
            if isinstance(error, AdapterUnavailable):
                raise error  # (a second poller of the token: said in one line)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actorbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="turn a photo and a line into a video, locally")
    gen.add_argument(
        "photo",
        nargs="?",
        help="JPEG, PNG, WebP, AVIF or HEIC image of the character (none with a character)",
    )
    gen.add_argument(
        "line",
        help="e.g. The girl smiles and says: \"You didn't think I'd give up?\""
        " (@NAME casts a saved character)",
    )
    gen.add_argument("--character", help="a saved character to cast: its photo, voice and seed")
    gen.add_argument("-o", "--output", default="out.mp4", help="where to write the video")
    gen.add_argument("--takes", type=int, help="how many takes to render (1-5)")
    gen.add_argument("--duration", type=int, choices=(5, 10), help="clip length in seconds")
    gen.add_argument("--seed", type=int, help="seed for repeatable takes")
    gen.add_argument("--voice", help="voice name; the same name always sounds the same")
    _character_parser(sub.add_parser("character", help="save, list or delete characters"))
    run = sub.add_parser("run", help="run the configured chat bots and the worker")
    run.add_argument(
        "--role",
        choices=("all", "ingress", "worker"),
        default="all",
        help="ingress: take chat events in and admit jobs; worker: run and deliver jobs;"
        " all (default): both, in this process",
    )
    sub.add_parser("resume", help="finish local jobs left unfinished by a crash, then exit")
    sub.add_parser("doctor", help="check config, fonts, speech, codecs and the store")
    sub.add_parser("presets", help="list the model presets: lengths, price, voice")
    return parser


def _character_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    save = actions.add_parser("save", help="save a photo as a character (again: a new photo)")
    save.add_argument("name", help="cast it with @NAME in a line or --character NAME")
    save.add_argument("photo", help="JPEG, PNG, WebP, AVIF or HEIC image of the character")
    save.add_argument("--voice", help="voice name; the same name always sounds the same")
    save.add_argument("--seed", type=int, help="seed its takes start from")
    save.add_argument("--description", default="", help="a short note on who this is")
    create = actions.add_parser(
        "create", help="draw a character from a description with a hosted image model"
    )
    create.add_argument("name", help="cast it with @NAME in a line or --character NAME")
    create.add_argument("description", help="who to draw, e.g. 'a young woman, short black hair'")
    create.add_argument(
        "--pick", type=int, choices=range(0, 5), metavar="N",
        help="save candidate N (0: none); without it you are asked (on a terminal)",
    )  # fmt: skip
    create.add_argument("--out", default=".", help="directory the candidates are written to")
    actions.add_parser("list", help="list your characters")
    voice = actions.add_parser(
        "voice", help="give a character a voice: a voice name, or a recording with --sample"
    )
    voice.add_argument("name")
    voice.add_argument("voice", nargs="?", help="voice name; the same name always sounds the same")
    voice.add_argument(
        "--sample", metavar="FILE", help="5-30 s of one person speaking (MP3, WAV, OGG, M4A)"
    )
    delete = actions.add_parser("delete", help="delete a character and its photo")
    delete.add_argument("name")


def _read(path: str, console: Console) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        console.print(f"[red]error:[/] cannot read {escape(f'{path}: {exc.strerror}')}")
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        settings = load_settings()
    except ConfigError as exc:
        console.print(f"[red]config error:[/] {escape(str(exc))}")
        return EXIT_USAGE
    configure_logging(
        settings.log_level if args.command != "generate" else "WARNING",
        secrets=_secrets(settings),
        log_format=settings.log_format,
    )
    try:
        if args.command == "generate":
            if args.photo is None and args.character is None and not character_names(args.line):
                console.print(
                    "[red]error:[/] give a PHOTO, or cast a saved character with"
                    " --character NAME or @NAME in the line"
                )
                return EXIT_USAGE
            # A cast character brings its own (prepared) photo.
            image = b"" if args.photo is None else _read(args.photo, console)
            if image is None:
                return EXIT_FAILED
            return asyncio.run(_generate(settings, args, image, console))
        if args.command == "character":
            args.photo_bytes = b""
            if args.action == "save":
                args.photo_bytes = _read(args.photo, console)
                if args.photo_bytes is None:
                    return EXIT_FAILED
            if args.action == "voice":
                if (args.voice is None) == (args.sample is None):
                    console.print("[red]error:[/] give a voice name or --sample FILE (one of them)")
                    return EXIT_USAGE
                args.sample_bytes = b""
                if args.sample is not None:
                    args.sample_bytes = _read(args.sample, console)
                    if args.sample_bytes is None:
                        return EXIT_FAILED
            return asyncio.run(_character(settings, args, console))
        if args.command == "resume":
            return asyncio.run(_resume(settings, console))
        if args.command == "run":
            return asyncio.run(_run(settings, console, args.role))
        if args.command == "presets":
            return _presets(settings, console)
        from bots.doctor import doctor

        return asyncio.run(doctor(settings, console))
    except ActorbotError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _presets(settings: Settings, console: Console) -> int:
    """Print the configured model presets as a table."""
    from rich.table import Table

    from core.backends.presets import preset_rows

    table = Table(title="Model presets (backend = <name>)")
    table.add_column("name", no_wrap=True)
    for column in ("model", "provider", "lengths", "price per clip", "stable voice"):
        table.add_column(column)
    for row in preset_rows(settings):
        mark = "" if row.configured else " (no key)"
        table.add_row(row.name, row.title, row.provider + mark, row.durations, row.price, row.voice)
    console.print(table)
    return EXIT_OK


def _secrets(settings: Settings) -> list[str]:
    return [
        settings.jobapi.token.get_secret_value(),
        settings.providers.fal.key.get_secret_value(),
        settings.providers.replicate.key.get_secret_value(),
        settings.providers.gaga.key.get_secret_value(),
        *settings.store.secrets,  # the PostgreSQL URL and its password
        *adapter_secrets(settings),
    ]


if __name__ == "__main__":
    sys.exit(main())
