"""The repositories bench/context_quality.py measures, pinned (see bench/README.md).

Each is a public GitHub repository at a fixed commit; the cases are commits among the newest
``--scan`` non-merge commits before it. ``final``: the held-out third, scored once at the end,
never used to choose a weight or a feature.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QualityRepo", "REPOS"]


@dataclass(frozen=True)
class QualityRepo:
    name: str
    github: str  # owner/name
    head: str  # the commit the history is read back from
    language: str
    shape: str
    final: bool = False

    @property
    def specialist(self) -> str | None:
        """The built-in agent type for the repository's language, if there is one."""
        return {"python": "python-specialist", "go": "go-specialist", "rust": "rust-specialist"}.get(self.language)

    @property
    def foreign(self) -> str:
        """A specialist for a language the repository barely has."""
        return "go-specialist" if self.language == "python" else "python-specialist"


REPOS = [
    QualityRepo("flask", "pallets/flask", "2ac89889f4cc330eabd50f295dcef02828522c69", "python", "web framework, src layout"),
    QualityRepo("starlette", "encode/starlette", "cb8f84f5284dc301ca7a31eb732b9e140769dd48", "python", "small ASGI library"),
    QualityRepo("viper", "spf13/viper", "528f7416c4b56a4948673984b190bf8713f0c3c4", "go", "small config library"),
    QualityRepo("chi", "go-chi/chi", "735ae2b87f8c733d616e809ae86e0985c1bc3350", "go", "small router, middleware folder"),
    QualityRepo("prometheus", "prometheus/prometheus", "d15adb9ad7e5d9fbde3a9a8f30200593a5a14d86", "go",
                "large server, generated code, web UI (TypeScript)"),
    QualityRepo("axum", "tokio-rs/axum", "3d78036dcac289d6c1d54934708acb6a5bd73686", "rust", "cargo workspace, examples"),
    QualityRepo("jsoup", "jhy/jsoup", "46b620860af930eedc193a705eaf7cea5aec89a6", "java", "Java library, deep packages"),
    QualityRepo("sinatra", "sinatra/sinatra", "cb22afd7902b566b6eaba6c4ea89739494a65d12", "ruby", "Ruby framework + contrib gems"),
    QualityRepo("jq", "jqlang/jq", "579e6f76cffd7643ba4002a2c3618a5ea710589a", "c", "C program, generated parser, vendored libs"),
    QualityRepo("redis", "redis/redis", "4f8cdc2a1ea53e42955af758aabffee67cb455dd", "c", "large C server, modules, deps"),
    QualityRepo("trpc", "trpc/trpc", "340811ba5320637fbaf48fccf3dbfdd258bd34db", "typescript", "TypeScript monorepo (packages/*)"),
    QualityRepo("guzzle", "guzzle/guzzle", "2779e868a00289e1b1fd854af030c43a06f4bcb4", "php", "PHP library"),
    # until 2026-11-30 the final check; looked at twice since, so now tuning repositories
    QualityRepo("requests", "psf/requests", "1f6589ec3a1ee910f9a65cc3ceac60b26677bc0e", "python", "small library"),
    QualityRepo("logrus", "sirupsen/logrus", "87434bb3a736e2a27d34df66924471714f408d3d", "go", "small flat library"),
    QualityRepo("koa", "koajs/koa", "e0ba8ef39d27fe5dae5492f9fe753d155124f994", "javascript", "small JS framework"),
    QualityRepo("clap", "clap-rs/clap", "6982fb1c98c7247e38a6d4f04191b94e30497e7b", "rust", "cargo workspace, derive macros"),
    QualityRepo("gson", "google/gson", "9835b6f90192f79cdf5300c528fc6212455fb6c1", "java", "Java library, maven modules"),
    QualityRepo("rack", "rack/rack", "8bf4eb078498edc9105fb04add80d89c5340e60b", "ruby", "Ruby library"),
    # the first final check of 2026-11-30 (scored once that day): tuning repositories since
    QualityRepo("polly", "App-vNext/Polly", "173d6d1d2e28a4697f1ac1d22da68f77ff19a0c9", "csharp",
                "C# library, several packages, public API files"),
    QualityRepo("okhttp", "square/okhttp", "1682d9bac8c03dffde2969b0b74d47649d0dbb52", "kotlin",
                "Kotlin multi-module library, generated API dumps"),
    QualityRepo("phoenix", "phoenixframework/phoenix", "167c46950cf53aef363d672687cc653267c20aa6", "elixir",
                "Elixir framework, JS client, generators and templates"),
    QualityRepo("circe", "circe/circe", "1da94272096eedd88a6ea04be127618ef8cf943a", "scala",
                "Scala library, cross-built modules"),
    QualityRepo("alamofire", "Alamofire/Alamofire", "7595cbcf59809f9977c5f6378500de2ad73b7ddb", "swift",
                "Swift library, Xcode project files"),
    QualityRepo("otel-python", "open-telemetry/opentelemetry-python", "0a5d76b65094a4bad414e0c0ab68981fc266f0a9",
                "python", "Python monorepo (api, sdk, exporters, propagators)"),
    QualityRepo("caddy", "caddyserver/caddy", "0cf03d32f7d99cf160d5375e8a40fbe3d910d515", "go",
                "Go server, modules, Caddyfile adapters"),
    # the final check of 2026-11-30 (second round; chosen by the lead, never scored before the
    # model was chosen on the 25 above): scored once, at the end
    QualityRepo("pydantic", "pydantic/pydantic", "2151025aa51263f3016502b00010b78e4481eaa1", "python",
                "Python library with a Rust core (pydantic-core), docs site", final=True),
    QualityRepo("click", "pallets/click", "2c8cd3ac958a7eb316d67f2d316c27086c4c0369", "python",
                "small CLI library, src layout", final=True),
    QualityRepo("gin", "gin-gonic/gin", "dcaa4296d111981ffb31ac3eba90bb63e1eb5ab9", "go",
                "small flat web framework", final=True),
    QualityRepo("etcd", "etcd-io/etcd", "c34dc7ee0048fd2bcc44d50beff002e5e8069b69", "go",
                "large Go server, several modules (api, client, server, etcdctl)", final=True),
    QualityRepo("ripgrep", "BurntSushi/ripgrep", "3fce3b5bb0236da2df6d99672afb8a719642eca7", "rust",
                "Rust program, cargo workspace of crates", final=True),
    QualityRepo("serde", "serde-rs/serde", "1023d077510b4aef36a41ef56fdb7798568a2654", "rust",
                "Rust library, derive macros, compile-fail test outputs", final=True),
    QualityRepo("express", "expressjs/express", "a3714473feb3d2908add734d340e7755fd85e0a3", "javascript",
                "small JS framework, examples", final=True),
    QualityRepo("vue", "vuejs/core", "e2bede96134f757aad5c5b33ac9be055022dbfc8", "typescript",
                "TypeScript monorepo (packages/*), compiler and runtime", final=True),
    QualityRepo("commons-lang", "apache/commons-lang", "d15939ef46f0bd4144994df8be95cf5a7f91eb52", "java",
                "large Java utility library, one package tree", final=True),
    QualityRepo("jekyll", "jekyll/jekyll", "202df571314ba1d18e9fccd81d12aaad4a703c38", "ruby",
                "Ruby program, docs site, cucumber features", final=True),
    QualityRepo("composer", "composer/composer", "eba7baa59eb1b59246cf9800b0120fe78915b6ac", "php",
                "PHP program, fixture-driven tests", final=True),
    QualityRepo("curl", "curl/curl", "5c61e168698a72b87437d58ed728bcdea6d5db42", "c",
                "large C library and tool, many docs, Perl test harness", final=True),
    QualityRepo("fmt", "fmtlib/fmt", "60ccad511fd680cb91d8b60a315759f71c67bef9", "c++",
                "small C++ library, headers and sources", final=True),
    QualityRepo("pandoc", "jgm/pandoc", "0a9a2f261510322ee5a33a2a7facce54b8a718ec", "haskell",
                "Haskell program, many format readers/writers, large test data", final=True),
    QualityRepo("json", "nlohmann/json", "199dea11b17c533721b26249e2dcaee6ca1d51d3", "c++",
                "C++ header library, generated single-include headers", final=True),
]
