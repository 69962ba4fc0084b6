"""Message catalog for user-facing text, in English and Simplified Chinese.

Core errors and events carry a key and parameters; adapters call ``render`` with the
user's locale. Every key exists in every locale (a test checks it).
"""

from __future__ import annotations

from typing import Any

LOCALES = ("en", "zh")
DEFAULT_LOCALE = "en"

CATALOG: dict[str, dict[str, str]] = {
    "en": {
        # images
        "image.empty": "The file is empty. Send a photo of your character.",
        "image.not_an_image": "That file is not an image. Send a JPEG, PNG, WebP, AVIF or HEIC photo.",
        "image.too_many_bytes": "The image is too large ({size_mb:.1f} MB; the limit is {limit_mb:.0f} MB).",
        "image.too_many_pixels": "The image is too large ({width}×{height} pixels; the limit is {limit_mp:.0f} megapixels).",
        "image.too_small": "The image is too small ({width}×{height}); send one at least {min_side} pixels on each side.",
        "image.corrupt": "The image could not be read; it may be truncated or damaged. Please send it again.",
        # prompts
        "prompt.empty": "Write the line your character should perform, e.g. The girl smiles and says: \"You didn't really think I'd give up?\"",
        "prompt.too_many_chars": "The line is too long ({length} characters; the limit is {limit}).",
        "prompt.too_long_to_speak": "That line needs about {estimate:.1f} s to speak, but a clip holds at most {limit:.1f} s of speech. Shorten it or split it in two.",
        "prompt.too_long_for_duration": "That line needs about {estimate:.1f} s to speak; a {seconds} s clip holds about {limit:.1f} s. Use 10 s or shorten the line.",
        "prompt.bad_flag": "I did not understand the option {flag!r}. Options: --5s, --10s, --takes N (1–{max_takes}), --seed N, --voice NAME.",
        "prompt.bad_takes": "Takes must be between 1 and {max_takes}.",
        "prompt.bad_duration": "Duration must be 5 or 10 seconds.",
        # requests
        "request.duplicate": "This message was already received; its video is on the way.",
        "request.unknown_job": "No such request.",
        "request.not_owner": "Only the person who asked for this video can do that.",
        "request.not_cancelable": "This take has already started and can no longer be canceled.",
        # quotas and access
        "quota.no_credits": "Not enough credits: this needs {cost} and you have {credits}. Your credits refill in {hours} h {minutes} min.",
        "quota.balance": "You have {credits} credits left; they refill in {hours} h {minutes} min.",
        "quota.user_queue_full": "You already have {queued} takes waiting (the limit is {limit}). Wait for one to start, or cancel one.",
        "quota.chat_full": "This chat has used its {limit} videos for today. The count resets in {hours} h {minutes} min.",
        "quota.busy": "The bot is very busy right now. Please try again in a few minutes.",
        "quota.flood": "You are sending requests too fast. Wait {seconds} s, then try again.",
        "access.banned": "You can no longer use this bot. If you think this is a mistake, contact an admin.",
        "access.banned_until": "You are blocked from this bot for another {hours} h {minutes} min.",
        "access.allowlist": "This bot is invite-only. Ask an admin to add you.",
        "access.approval_required": "This bot needs an admin's approval first. Send /access to ask for it.",
        "access.pending": "Your access request is waiting for an admin. You will be told when it is approved.",
        "access.denied": "An admin declined your access request.",
        "access.requested": "Your request was sent to the admins.",
        "access.approved": "An admin approved your access. Send a photo and a line to start.",
        "access.unknown_account": "No such user.",
        "access.link_code": "Your link code is {code}. Within {minutes} min, send /link {code} from your other account (Telegram or Discord) to share one balance.",
        "access.linked": "Linked: your accounts now share one balance.",
        "access.link_bad_code": "That link code is wrong or has expired. Get a new one with /link on your other account.",
        "access.link_already": "These accounts are already linked.",
        "access.link_same_platform": "Send the code from an account on another platform (Telegram or Discord).",
        "access.link_busy": "Wait until this account's takes have finished, then link again.",
        "access.link_refused": "These accounts cannot be linked. Contact an admin.",
        # job life
        "job.queued": "Queued: position {position}, about {eta}.",
        "job.started": "Generating… ({elapsed})",
        "job.delivering": "Uploading…",
        "job.delivered": "Done: {seconds} s, take {take}/{takes}.",
        "job.canceled": "Canceled.",
        "job.backend_failed": "The video could not be generated this time. You were not charged; try again.",
        "job.filtered": "The video service refused this photo or line under its content policy. You were not charged.",
        "job.deadline": "The video took too long (over {minutes} min) and was stopped. You were not charged.",
        "job.bad_result": "The video service returned a broken file. You were not charged; try again.",
        "job.undeliverable": "The video was made but could not be delivered here.",
        "job.too_large_to_deliver": "The video is too large to send here ({size_mb:.1f} MB; the limit is {limit_mb:.0f} MB). You were not charged.",
        "job.interrupted": "The service restarted while this take was running; it could not be resumed. You were not charged.",
        "eta.minutes": "{minutes} min",
        "eta.seconds": "{seconds} s",
        # Telegram adapter
        "tg.ack": "Got it! Preparing your video…",
        "tg.ack_album": "Got it! From your album I am using the photo that has the caption.",
        "tg.ask_line": "Now send the line your character should perform, e.g. The girl smiles and says: \"You didn't really think I'd give up?\"",
        "tg.ask_line_placeholder": 'The girl smiles and says: "…"',
        "tg.need_photo": "First send a photo of your character with the line as its caption, e.g. The girl smiles and says: \"You didn't really think I'd give up?\"",
        "tg.fetch_failed": "I could not download your photo from Telegram. Please send it again.",
        "tg.internal_error": "Something went wrong on our side. Please try again.",
        "tg.start": "Hi! Send me a photo of a character with one line as its caption and I will make a short video of them performing it.\n\nTry: a portrait with the caption\nThe girl smiles and says: \"You didn't really think I'd give up?\"\n\n/help shows all options.",
        "tg.help": "How to use:\n1. Send a photo (or the image as a file, for full resolution).\n2. Write the line as its caption, e.g.\nThe girl smiles and says: \"You didn't really think I'd give up?\"\n\nOptions at the end of the line: --5s or --10s (clip length), --takes N (up to {max_takes} takes), --seed N, --voice NAME.\nA photo without a caption: I ask for the line. A line without a photo: I reuse your last photo.\nIn groups: caption the photo with /gen LINE, mention me, or reply /gen LINE to someone's photo.\n\n/cancel stops waiting takes · /history resends your last videos · /lang en|zh",
        "tg.take_line": "Take {take}/{takes}: {text}",
        "tg.caption": "{line}\n{seconds} s · take {take}/{takes}",
        "tg.button.retake": "🔁 Another take",
        "tg.button.new_line": "✏️ New line",
        "tg.button.switch": "⏱ {seconds} s",
        "tg.button.cancel": "❌ Cancel",
        "tg.button_expired": "This button has expired.",
        "tg.new_line_prompt": "Send the new line for this photo.",
        "tg.retake_started": "On its way.",
        "tg.canceled": "Canceled {count} waiting take(s).",
        "tg.nothing_to_cancel": "Nothing of yours is waiting.",
        "tg.lang_set": "I will answer you in English.",
        "tg.lang_usage": "Use /lang en or /lang zh.",
        "tg.history_empty": "You have no videos yet.",
        "tg.stats": "Jobs by state: {summary}",
        "tg.admin_only": "Only bot admins can do that.",
        "tg.cmd.start": "What this bot does",
        "tg.cmd.help": "How to write a request, with an example",
        "tg.cmd.gen": "Make a video: /gen LINE with a photo",
        "tg.cmd.cancel": "Cancel your waiting takes",
        "tg.cmd.history": "Send your last videos again",
        "tg.cmd.lang": "Language: /lang en or /lang zh",
    },
    "zh": {
        "image.empty": "文件是空的。请发送角色的照片。",
        "image.not_an_image": "这个文件不是图片。请发送 JPEG、PNG、WebP、AVIF 或 HEIC 格式的照片。",
        "image.too_many_bytes": "图片太大（{size_mb:.1f} MB，上限 {limit_mb:.0f} MB）。",
        "image.too_many_pixels": "图片尺寸太大（{width}×{height} 像素，上限 {limit_mp:.0f} 百万像素）。",
        "image.too_small": "图片太小（{width}×{height}），每边至少需要 {min_side} 像素。",
        "image.corrupt": "无法读取这张图片，可能已损坏或不完整。请重新发送。",
        "prompt.empty": "请写下角色要表演的台词，例如：女孩笑着说：'你不会真的以为，我是那种一哭就输的女孩？'",
        "prompt.too_many_chars": "台词太长（{length} 个字符，上限 {limit}）。",
        "prompt.too_long_to_speak": "这句台词大约需要 {estimate:.1f} 秒才能说完，但一个片段最多容纳 {limit:.1f} 秒的语音。请缩短或分成两句。",
        "prompt.too_long_for_duration": "这句台词大约需要 {estimate:.1f} 秒；{seconds} 秒的片段大约只能容纳 {limit:.1f} 秒。请改用 10 秒或缩短台词。",
        "prompt.bad_flag": "无法识别选项 {flag!r}。可用选项：--5s、--10s、--takes N（1–{max_takes}）、--seed N、--voice 名称。",
        "prompt.bad_takes": "生成次数必须在 1 到 {max_takes} 之间。",
        "prompt.bad_duration": "时长只能是 5 秒或 10 秒。",
        "request.duplicate": "这条消息已经收到，视频正在生成中。",
        "request.unknown_job": "找不到这个请求。",
        "request.not_owner": "只有发起请求的人才能这样做。",
        "request.not_cancelable": "这一条已经开始生成，无法取消。",
        "quota.no_credits": "额度不足：本次需要 {cost} 点，你还剩 {credits} 点。{hours} 小时 {minutes} 分钟后恢复。",
        "quota.balance": "你还剩 {credits} 点额度，{hours} 小时 {minutes} 分钟后恢复。",
        "quota.user_queue_full": "你已有 {queued} 条在排队（上限 {limit}）。请等其中一条开始生成，或取消一条。",
        "quota.chat_full": "这个聊天今天的 {limit} 个视频已用完，{hours} 小时 {minutes} 分钟后重置。",
        "quota.busy": "现在排队的人太多了，请过几分钟再试。",
        "quota.flood": "你发送得太快了。请等 {seconds} 秒再试。",
        "access.banned": "你已被禁止使用这个机器人。如有误会，请联系管理员。",
        "access.banned_until": "你暂时无法使用这个机器人，还需等待 {hours} 小时 {minutes} 分钟。",
        "access.allowlist": "这个机器人仅限受邀用户使用。请联系管理员添加你。",
        "access.approval_required": "使用前需要管理员批准。发送 /access 提出申请。",
        "access.pending": "你的申请正在等待管理员审核，批准后会通知你。",
        "access.denied": "管理员拒绝了你的使用申请。",
        "access.requested": "你的申请已发送给管理员。",
        "access.approved": "管理员已批准你的申请。发送一张照片和一句台词即可开始。",
        "access.unknown_account": "找不到这个用户。",
        "access.link_code": "你的关联码是 {code}。请在 {minutes} 分钟内用另一个账号（Telegram 或 Discord）发送 /link {code}，两个账号将共用一份额度。",
        "access.linked": "关联成功：你的账号现在共用一份额度。",
        "access.link_bad_code": "关联码错误或已过期。请在另一个账号上发送 /link 获取新的关联码。",
        "access.link_already": "这两个账号已经关联。",
        "access.link_same_platform": "请用另一个平台的账号（Telegram 或 Discord）发送关联码。",
        "access.link_busy": "请等这个账号的视频生成完毕后再关联。",
        "access.link_refused": "这两个账号无法关联，请联系管理员。",
        "job.queued": "排队中：第 {position} 位，大约 {eta}。",
        "job.started": "生成中…（{elapsed}）",
        "job.delivering": "上传中…",
        "job.delivered": "完成：{seconds} 秒，第 {take}/{takes} 条。",
        "job.canceled": "已取消。",
        "job.backend_failed": "这次没能生成视频。未扣除额度，请再试一次。",
        "job.filtered": "视频服务根据内容政策拒绝了这张照片或台词。未扣除额度。",
        "job.deadline": "生成时间过长（超过 {minutes} 分钟），已停止。未扣除额度。",
        "job.bad_result": "视频服务返回了损坏的文件。未扣除额度，请再试一次。",
        "job.undeliverable": "视频已生成，但无法发送到这里。",
        "job.too_large_to_deliver": "视频太大，无法在这里发送（{size_mb:.1f} MB，上限 {limit_mb:.0f} MB）。未扣除额度。",
        "job.interrupted": "服务在生成过程中重启，无法继续这一条。未扣除额度。",
        "eta.minutes": "{minutes} 分钟",
        "eta.seconds": "{seconds} 秒",
        "tg.ack": "收到！正在准备你的视频…",
        "tg.ack_album": "收到！相册里我使用带说明文字的那张照片。",
        "tg.ask_line": "现在请发送角色要表演的台词，例如：女孩笑着说：'你不会真的以为，我是那种一哭就输的女孩？'",
        "tg.ask_line_placeholder": "女孩笑着说：'……'",
        "tg.need_photo": "请先发送角色的照片，并把台词写在照片说明里，例如：女孩笑着说：'你不会真的以为，我是那种一哭就输的女孩？'",
        "tg.fetch_failed": "无法从 Telegram 下载你的照片，请重新发送。",
        "tg.internal_error": "我们这边出了点问题，请再试一次。",
        "tg.start": "你好！发送一张角色照片，并在说明里写一句台词，我会生成一段角色表演这句台词的短视频。\n\n试试：一张人像，说明写\n女孩笑着说：'你不会真的以为，我是那种一哭就输的女孩？'\n\n/help 查看全部选项。",
        "tg.help": "使用方法：\n1. 发送一张照片（以文件形式发送可保留原始分辨率）。\n2. 在照片说明里写台词，例如：\n女孩笑着说：'你不会真的以为，我是那种一哭就输的女孩？'\n\n台词末尾可加选项：--5s 或 --10s（片段时长）、--takes N（最多 {max_takes} 条）、--seed N、--voice 名称。\n只发照片不写说明：我会询问台词。只发台词：我会使用你上一张照片。\n在群组中：照片说明以 /gen 台词 开头、提及我，或用 /gen 台词 回复别人的照片。\n\n/cancel 取消排队中的任务 · /history 重新发送最近的视频 · /lang en|zh",
        "tg.take_line": "第 {take}/{takes} 条：{text}",
        "tg.caption": "{line}\n{seconds} 秒 · 第 {take}/{takes} 条",
        "tg.button.retake": "🔁 再来一条",
        "tg.button.new_line": "✏️ 换台词",
        "tg.button.switch": "⏱ {seconds} 秒",
        "tg.button.cancel": "❌ 取消",
        "tg.button_expired": "这个按钮已失效。",
        "tg.new_line_prompt": "请发送这张照片的新台词。",
        "tg.retake_started": "马上开始。",
        "tg.canceled": "已取消 {count} 条排队中的任务。",
        "tg.nothing_to_cancel": "你没有排队中的任务。",
        "tg.lang_set": "我会用中文回复你。",
        "tg.lang_usage": "请使用 /lang en 或 /lang zh。",
        "tg.history_empty": "你还没有视频。",
        "tg.stats": "各状态任务数：{summary}",
        "tg.admin_only": "只有机器人管理员可以这样做。",
        "tg.cmd.start": "机器人介绍",
        "tg.cmd.help": "如何写请求（含示例）",
        "tg.cmd.gen": "生成视频：照片加 /gen 台词",
        "tg.cmd.cancel": "取消排队中的任务",
        "tg.cmd.history": "重新发送最近的视频",
        "tg.cmd.lang": "语言：/lang en 或 /lang zh",
    },
}


def normalize_locale(code: str | None) -> str:
    """Map a platform language code (``zh-hans``, ``en-US``, None) to a catalog locale."""
    if code and code.lower().startswith("zh"):
        return "zh"
    return DEFAULT_LOCALE if not code or not code.lower().startswith("en") else "en"


def render(key: str, locale: str | None = None, **params: Any) -> str:
    """Render a message key in a locale, falling back to English, then to the key itself."""
    catalog = CATALOG.get(normalize_locale(locale), CATALOG[DEFAULT_LOCALE])
    template = catalog.get(key) or CATALOG[DEFAULT_LOCALE].get(key)
    if template is None:
        return key
    try:
        return template.format(**params)
    except (KeyError, ValueError, IndexError):
        # A missing parameter must never turn a refusal into a crash.
        return template
