"""How this project runs the page in headless Chromium (its browser tests and screenshot tool).

No GPU: WebGL goes through SwiftShader (ANGLE's software Vulkan). The background-networking
flags keep Chromium from phoning home, which a closed network refuses many times a second.
"""

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
)
