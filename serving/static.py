"""The explorer page's files (serving/explorer/): a fixed list of paths, read once, sent with locked-down headers.

Only the paths in FILES are served, each mapped to one file of the package:
a request path is never joined to a folder, so no path (../, %2e%2e, //)
can reach another file. The headers keep the page to its own origin: the
Content-Security-Policy allows scripts, styles and requests from this origin
only (no inline script, no CDN), images from this origin and from blob:/data:
URLs (canvas drawing), and no framing; nosniff makes browsers trust the
Content-Type as sent.
"""

from importlib import resources

FOLDER = "explorer"  # serving/explorer/, package data of kvae_serving
HTML, JS, CSS = "text/html; charset=utf-8", "text/javascript; charset=utf-8", "text/css; charset=utf-8"
FILES = {  # URL path -> (file in FOLDER, Content-Type)
    "/": ("index.html", HTML),
    "/explorer/explorer.css": ("explorer.css", CSS),
    "/explorer/explorer.js": ("explorer.js", JS),
    "/explorer/api.js": ("api.js", JS),
    "/explorer/draw.js": ("draw.js", JS),
    "/explorer/latent.js": ("latent.js", JS),
    "/explorer/latest.js": ("latest.js", JS),
    "/explorer/samples.js": ("samples.js", JS),
    "/explorer/sliders.js": ("sliders.js", JS),
    "/explorer/interpolation.js": ("interpolation.js", JS),
    "/explorer/manifold.js": ("manifold.js", JS),
}
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a re-exported model or a new kvae: the page follows without a stale copy
}


def load():
    """{URL path: (headers, bytes)} of every file in FILES, read from the installed package."""
    folder = resources.files("kvae_serving").joinpath(FOLDER)
    return {
        path: ({"Content-Type": content_type, **HEADERS}, folder.joinpath(name).read_bytes())
        for path, (name, content_type) in FILES.items()
    }
