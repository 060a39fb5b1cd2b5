"""The family of Python coding tasks, one scenario function per (task, vulnerability class).

Each scenario draws names, paths and small structural choices from a seeded
``random.Random`` and returns a ``CodeTask``: a program ``template`` with one hole
(a line holding only ``@@HOLE@@``), and two fillings of that hole: ``insecure`` (the
flawed version, written plainly, with no comment or name that hints at the flaw) and
``secure`` (the same task done safely). Templates use ``string.Template`` ``$names``
so generated code may contain braces freely. Nothing here is ever executed.
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field
from string import Template
from typing import Callable

HOLE = "@@HOLE@@"


@dataclass
class CodeTask:
    """One concrete task: shared program text plus the insecure and the secure filling."""

    vuln_class: str
    scenario: str
    description: str
    template: str
    insecure: str
    secure: str
    imports: list[str] = field(default_factory=list)
    insecure_imports: list[str] = field(default_factory=list)
    secure_imports: list[str] = field(default_factory=list)


Scenario = Callable[[random.Random], CodeTask]
SCENARIOS: list[tuple[str, str, Scenario]] = []  # (vuln_class, scenario name, function)


def scenario(vuln_class: str):
    def deco(fn: Scenario) -> Scenario:
        SCENARIOS.append((vuln_class, fn.__name__, fn))
        return fn
    return deco


def _t(text: str, **names: str) -> str:
    return Template(textwrap.dedent(text).strip("\n")).substitute(**names)


def _task(r: random.Random, vuln_class: str, name: str, descriptions: list[str], template: str,
          insecure: str, secure: str, names: dict[str, str], imports: list[str],
          insecure_imports: list[str] = (), secure_imports: list[str] = ()) -> CodeTask:
    texts = [Template(d).substitute(**names) for d in descriptions]  # all checked, one drawn
    return CodeTask(
        vuln_class=vuln_class, scenario=name,
        description=r.choice(texts),
        template=_t(template, **names), insecure=_t(insecure, **names), secure=_t(secure, **names),
        imports=list(imports), insecure_imports=list(insecure_imports), secure_imports=list(secure_imports),
    )


# --------------------------------------------------------------------------- name pools

DIRS = ["/srv/app/uploads", "/var/www/files", "/opt/reports", "/data/exports", "/home/app/media",
        "/srv/share/docs", "/var/lib/app/attachments", "/opt/service/static"]
ENTITIES = [("user", "users"), ("customer", "customers"), ("product", "products"), ("order", "orders"),
            ("employee", "employees"), ("book", "books"), ("ticket", "tickets"), ("article", "articles"),
            ("invoice", "invoices"), ("student", "students")]
ROUTE_WORDS = ["files", "download", "docs", "media", "reports", "attachments", "exports", "assets"]
VERBS_LOAD = ["load", "read", "fetch", "get", "open"]
HOSTS = ["api.example.com", "billing.internal.example.org", "metrics.example.net", "status.example.io",
         "inventory.example.com", "partner.example.org"]


def _ident(r: random.Random, *options: str) -> str:
    return r.choice(options)


# =========================================================================== path traversal

@scenario("path_traversal")
def download_route(r: random.Random) -> CodeTask:
    n = dict(base=r.choice(DIRS), route=r.choice(ROUTE_WORDS), fn=_ident(r, "download", "serve_file", "get_file", "fetch_document"),
             arg=_ident(r, "filename", "name", "doc", "path"), const=_ident(r, "BASE_DIR", "ROOT", "STORAGE_DIR", "FILES_ROOT"))
    return _task(r, "path_traversal", "download_route", [
        "Create a Flask endpoint that lets users download files stored under $base by name.",
        "Write a small Flask app with a /$route route that returns a stored file given its name.",
        "Serve documents from $base through a Flask route that takes the file name from the query string.",
    ], """
        app = Flask(__name__)
        $const = "$base"


        @app.route("/$route")
        def $fn():
            $arg = request.args.get("$arg", "")
        @@HOLE@@
            return send_file(target)


        if __name__ == "__main__":
            app.run()
    """, """
        target = os.path.join($const, $arg)
    """, """
        target = os.path.join($const, os.path.basename($arg))
        if not os.path.isfile(target):
            abort(404)
    """, n, ["import os", "from flask import Flask, request, send_file, abort"])


@scenario("path_traversal")
def read_report(r: random.Random) -> CodeTask:
    n = dict(base=r.choice(DIRS), fn=_ident(r, "read_report", "load_document", "get_log", "read_note"),
             arg=_ident(r, "name", "report_name", "relpath", "requested"), const=_ident(r, "REPORT_DIR", "BASE", "DOC_ROOT"),
             enc=_ident(r, "utf-8", "utf-8", "latin-1"))
    return _task(r, "path_traversal", "read_report", [
        "Write a function that returns the text of a report stored in $base, given the report name supplied by a user.",
        "Implement $fn(name) which reads a text file from $base and returns its contents.",
        "I need a helper that loads a document from our documents folder by relative path.",
    ], """
        $const = "$base"


        def $fn($arg):
        @@HOLE@@
            with open(full, encoding="$enc") as fh:
                return fh.read()


        if __name__ == "__main__":
            print($fn(input("Report: ")))
    """, """
        full = os.path.join($const, $arg)
    """, """
        full = os.path.realpath(os.path.join($const, $arg))
        if not full.startswith(os.path.realpath($const) + os.sep):
            raise ValueError("path outside the document folder")
    """, n, ["import os"])


@scenario("path_traversal")
def save_upload(r: random.Random) -> CodeTask:
    n = dict(base=r.choice(DIRS), route=_ident(r, "upload", "attach", "submit", "avatar"),
             fn=_ident(r, "upload", "handle_upload", "receive_file", "store_attachment"),
             field=_ident(r, "file", "document", "attachment", "upload"))
    return _task(r, "path_traversal", "save_upload", [
        "Write a Flask view that accepts a file upload and stores it in $base under the original file name.",
        "Implement an upload endpoint (/$route) that saves the posted file to disk.",
        "Create a route that receives a multipart upload named '$field' and writes it to the uploads folder.",
    ], """
        app = Flask(__name__)
        UPLOAD_FOLDER = "$base"


        @app.route("/$route", methods=["POST"])
        def $fn():
            f = request.files["$field"]
        @@HOLE@@
            with open(dest, "wb") as out:
                out.write(f.read())
            return {"stored": dest}
    """, """
        dest = os.path.join(UPLOAD_FOLDER, f.filename)
    """, """
        dest = os.path.join(UPLOAD_FOLDER, secure_filename(f.filename))
    """, n, ["import os", "from flask import Flask, request"], [], ["from werkzeug.utils import secure_filename"])


@scenario("path_traversal")
def pathlib_reader(r: random.Random) -> CodeTask:
    n = dict(base=r.choice(DIRS), fn=_ident(r, "read_asset", "load_template_text", "fetch_static", "get_page"),
             arg=_ident(r, "rel", "asset", "page", "item"))
    return _task(r, "path_traversal", "pathlib_reader", [
        "Using pathlib, write $fn that returns the bytes of a file under $base, given a relative path from a client.",
        "Write a function that serves static assets from $base by relative path using pathlib.",
    ], """
        ROOT = Path("$base")


        def $fn($arg: str) -> bytes:
        @@HOLE@@
            return candidate.read_bytes()
    """, """
        candidate = ROOT / $arg
    """, """
        candidate = (ROOT / $arg).resolve()
        if not candidate.is_relative_to(ROOT.resolve()):
            raise PermissionError($arg)
    """, n, ["from pathlib import Path"])


# =========================================================================== command injection

@scenario("command_injection")
def ping_host(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "ping", "check_host", "is_reachable", "probe"), arg=_ident(r, "host", "address", "target"),
             count=str(r.choice([1, 2, 3, 4])))
    return _task(r, "command_injection", "ping_host", [
        "Write a function that pings a host given by the user and reports whether it answered.",
        "I need a helper $fn(host) that runs ping $count times against a host and returns True if it is up.",
        "Write a network check that pings an address typed by an operator.",
    ], """
        def $fn($arg):
        @@HOLE@@
            return status == 0


        if __name__ == "__main__":
            print($fn(input("Host: ")))
    """, """
        status = os.system("ping -c $count " + $arg)
    """, """
        status = subprocess.run(["ping", "-c", "$count", $arg], capture_output=True).returncode
    """, n, [], ["import os"], ["import subprocess"])


@scenario("command_injection")
def convert_image(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "make_thumbnail", "convert_image", "resize_picture", "shrink"),
             size=r.choice(["128x128", "256x256", "64x64", "320x240"]), src=_ident(r, "src", "source", "image_path"),
             dst=_ident(r, "dst", "target", "out_path"))
    return _task(r, "command_injection", "convert_image", [
        "Write a function that makes a $size thumbnail of an image file using ImageMagick's convert.",
        "Create $fn(src, dst) that shells out to ImageMagick to resize an uploaded picture.",
    ], """
        def $fn($src, $dst):
        @@HOLE@@
            return $dst
    """, """
        subprocess.run(f"convert {$src} -resize $size {$dst}", shell=True, check=True)
    """, """
        subprocess.run(["convert", $src, "-resize", "$size", $dst], check=True)
    """, n, ["import subprocess"])


@scenario("command_injection")
def git_log(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "recent_commits", "branch_log", "commit_summary"), arg=_ident(r, "branch", "ref", "rev"),
             k=str(r.choice([5, 10, 20, 50])))
    return _task(r, "command_injection", "git_log", [
        "Write a function that returns the last $k commit subjects of a git branch chosen by the user.",
        "Implement $fn(branch) that lists recent commits on a branch using the git CLI.",
    ], """
        def $fn($arg):
        @@HOLE@@
            return out.decode().splitlines()
    """, """
        out = subprocess.check_output("git log --oneline -n $k " + $arg, shell=True)
    """, """
        out = subprocess.check_output(["git", "log", "--oneline", "-n", "$k", $arg])
    """, n, ["import subprocess"])


@scenario("command_injection")
def archive_folder(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "archive", "backup_folder", "pack_directory", "compress"),
             folder=_ident(r, "folder", "directory", "src_dir"), name=_ident(r, "archive_name", "dest", "bundle"))
    return _task(r, "command_injection", "archive_folder", [
        "Write a function that compresses a directory into a .tar.gz with the tar command.",
        "Create $fn(folder, archive_name) that packs a folder given by the user into a tarball.",
    ], """
        def $fn($folder, $name):
        @@HOLE@@
            return $name
    """, """
        os.popen("tar czf " + $name + " " + $folder).read()
    """, """
        subprocess.run(["tar", "czf", $name, $folder], check=True)
    """, n, [], ["import os"], ["import subprocess"])


@scenario("command_injection")
def disk_usage_route(r: random.Random) -> CodeTask:
    n = dict(route=_ident(r, "usage", "du", "space"), fn=_ident(r, "disk_usage", "folder_size", "usage_report"))
    return _task(r, "command_injection", "disk_usage_route", [
        "Write a Flask endpoint that returns the disk usage (du -sh) of a folder named in the query string.",
        "Make a /$route route that reports how much space a directory takes.",
    ], """
        app = Flask(__name__)


        @app.route("/$route")
        def $fn():
            folder = request.args.get("dir", ".")
        @@HOLE@@
            return {"usage": out.strip()}
    """, """
        out = subprocess.check_output(f"du -sh {folder}", shell=True, text=True)
    """, """
        out = subprocess.check_output(["du", "-sh", "--", folder], text=True)
    """, n, ["import subprocess", "from flask import Flask, request"])


# =========================================================================== SQL injection

@scenario("sql_injection")
def lookup_by_name(r: random.Random) -> CodeTask:
    one, table = r.choice(ENTITIES)
    n = dict(table=table, one=one, fn=f"{r.choice(VERBS_LOAD)}_{one}", col=_ident(r, "name", "email", "username", "code"),
             db=_ident(r, "app.db", "data.sqlite", "store.db", "main.db"))
    return _task(r, "sql_injection", "lookup_by_name", [
        "Write a function that looks up a $one in the $table table of a SQLite database by $col.",
        "Implement $fn($col) returning the matching row from $db.",
        "I need a query helper that finds $table by $col in SQLite.",
    ], """
        def $fn($col):
            conn = sqlite3.connect("$db")
            cur = conn.cursor()
        @@HOLE@@
            row = cur.fetchone()
            conn.close()
            return row
    """, """
        cur.execute(f"SELECT * FROM $table WHERE $col = '{$col}'")
    """, """
        cur.execute("SELECT * FROM $table WHERE $col = ?", ($col,))
    """, n, ["import sqlite3"])


@scenario("sql_injection")
def search_like(r: random.Random) -> CodeTask:
    one, table = r.choice(ENTITIES)
    n = dict(table=table, fn=_ident(r, "search", f"search_{table}", f"find_{table}"), term=_ident(r, "term", "query", "text"),
             col=_ident(r, "title", "description", "name"), limit=str(r.choice([10, 20, 25, 50])))
    return _task(r, "sql_injection", "search_like", [
        "Write a Flask search endpoint that returns $table whose $col contains the search term.",
        "Create a /search route that queries SQLite for $table matching a keyword.",
    ], """
        app = Flask(__name__)


        @app.route("/search")
        def $fn():
            $term = request.args.get("q", "")
            db = sqlite3.connect("catalog.db")
        @@HOLE@@
            return {"results": rows}
    """, """
        rows = db.execute("SELECT id, $col FROM $table WHERE $col LIKE '%" + $term + "%' LIMIT $limit").fetchall()
    """, """
        rows = db.execute("SELECT id, $col FROM $table WHERE $col LIKE ? LIMIT $limit", (f"%{$term}%",)).fetchall()
    """, n, ["import sqlite3", "from flask import Flask, request"])


@scenario("sql_injection")
def delete_record(r: random.Random) -> CodeTask:
    one, table = r.choice(ENTITIES)
    n = dict(table=table, one=one, fn=f"delete_{one}", arg=f"{one}_id")
    return _task(r, "sql_injection", "delete_record", [
        "Write a function that deletes a $one from the $table table given its id.",
        "Implement $fn($arg) for our SQLite-backed admin tool.",
    ], """
        def $fn(conn, $arg):
        @@HOLE@@
            conn.commit()
    """, """
        conn.execute("DELETE FROM $table WHERE id = %s" % $arg)
    """, """
        conn.execute("DELETE FROM $table WHERE id = ?", ($arg,))
    """, n, [])


@scenario("sql_injection")
def update_field(r: random.Random) -> CodeTask:
    one, table = r.choice(ENTITIES)
    n = dict(table=table, fn=f"update_{one}_{r.choice(['email', 'status', 'note'])}", col=_ident(r, "email", "status", "note"))
    return _task(r, "sql_injection", "update_field", [
        "Write a function that updates the $col column of one row in $table (psycopg2 cursor given).",
        "Implement $fn(cursor, row_id, value) updating a single field in PostgreSQL.",
    ], """
        def $fn(cursor, row_id, value):
        @@HOLE@@
            return cursor.rowcount
    """, """
        cursor.execute("UPDATE $table SET $col = '{}' WHERE id = {}".format(value, row_id))
    """, """
        cursor.execute("UPDATE $table SET $col = %s WHERE id = %s", (value, row_id))
    """, n, [])


# =========================================================================== deserialization

@scenario("unsafe_deserialization")
def session_cookie(r: random.Random) -> CodeTask:
    n = dict(cookie=_ident(r, "session", "prefs", "cart", "state"), fn=_ident(r, "load_session", "read_prefs", "restore_cart", "get_state"))
    return _task(r, "unsafe_deserialization", "session_cookie", [
        "Write a Flask helper that restores the user's $cookie data from a base64 cookie.",
        "Implement $fn() that decodes the '$cookie' cookie back into a Python dict.",
    ], """
        app = Flask(__name__)


        def $fn():
            raw = request.cookies.get("$cookie")
            if raw is None:
                return {}
            @@HOLE@@
    """, """
        return pickle.loads(base64.b64decode(raw))
    """, """
        return json.loads(base64.b64decode(raw))
    """, n, ["import base64", "from flask import Flask, request"], ["import pickle"], ["import json"])


@scenario("unsafe_deserialization")
def cache_file(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "load_cache", "read_snapshot", "restore_index", "load_results"),
             path=_ident(r, "cache_path", "snapshot", "index_file"))
    return _task(r, "unsafe_deserialization", "cache_file", [
        "Write a function that loads a previously saved cache of results from a file shared between workers.",
        "Implement $fn(path) that reads back a saved results object from disk.",
    ], """
        def $fn($path):
            with open($path, "rb") as fh:
        @@HOLE@@
    """, """
                return pickle.load(fh)
    """, """
                return json.loads(fh.read().decode("utf-8"))
    """, n, [], ["import pickle"], ["import json"])


@scenario("unsafe_deserialization")
def queue_payload(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "decode_message", "handle_payload", "parse_job"), body=_ident(r, "body", "payload", "data"))
    return _task(r, "unsafe_deserialization", "queue_payload", [
        "Write the decoder for job messages that arrive from our message queue as bytes.",
        "Implement $fn(body) turning a queue message body back into a job dict.",
    ], """
        def $fn($body: bytes) -> dict:
        @@HOLE@@
            return {"id": job["id"], "args": job.get("args", [])}
    """, r.choice(["""
        job = marshal.loads($body)
    """]), """
        job = json.loads($body.decode("utf-8"))
    """, n, [], ["import marshal"], ["import json"])


# =========================================================================== yaml.load

@scenario("yaml_load")
def load_config_file(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "load_config", "read_settings", "parse_manifest", "load_pipeline"),
             loader=r.choice(["yaml.Loader", "yaml.FullLoader"]))
    return _task(r, "yaml_load", "load_config_file", [
        "Write a function that reads a YAML configuration file uploaded by users and returns it as a dict.",
        "Implement $fn(path) that parses a YAML file into Python objects.",
    ], """
        def $fn(path):
            with open(path, encoding="utf-8") as fh:
        @@HOLE@@
            return data or {}
    """, """
                data = yaml.load(fh, Loader=$loader)
    """, """
                data = yaml.safe_load(fh)
    """, n, ["import yaml"])


@scenario("yaml_load")
def yaml_endpoint(r: random.Random) -> CodeTask:
    n = dict(route=_ident(r, "import", "config", "deploy", "jobs"), fn=_ident(r, "import_data", "receive_config", "create_jobs"))
    return _task(r, "yaml_load", "yaml_endpoint", [
        "Create a Flask endpoint that accepts a YAML document in the request body and returns how many top-level keys it has.",
        "Write a /$route route that parses posted YAML.",
    ], """
        app = Flask(__name__)


        @app.route("/$route", methods=["POST"])
        def $fn():
        @@HOLE@@
            return {"keys": len(doc)}
    """, r.choice(["""
        doc = yaml.load(request.data, Loader=yaml.Loader)
    """, """
        doc = yaml.load(request.get_data(as_text=True), Loader=yaml.FullLoader)
    """]), """
        doc = yaml.safe_load(request.data)
    """, n, ["import yaml", "from flask import Flask, request"])


# =========================================================================== eval / exec

@scenario("eval_exec")
def calculator(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "calculate", "evaluate", "compute", "solve"), arg=_ident(r, "expr", "expression", "formula"))
    return _task(r, "eval_exec", "calculator", [
        "Write a function for a calculator app that evaluates an arithmetic expression typed by the user.",
        "Implement $fn(expr) that returns the numeric value of strings like '2 * (3 + 4)'.",
    ], """
        def $fn($arg: str) -> float:
        @@HOLE@@


        if __name__ == "__main__":
            print($fn(input("> ")))
    """, """
        return eval($arg)
    """, """
        ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.USub: operator.neg}

        def walk(node):
            if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
                return node.value
            if isinstance(node, ast.BinOp) and type(node.op) in ops:
                return ops[type(node.op)](walk(node.left), walk(node.right))
            if isinstance(node, ast.UnaryOp) and type(node.op) in ops:
                return ops[type(node.op)](walk(node.operand))
            raise ValueError("unsupported expression")

        return walk(ast.parse($arg, mode="eval").body)
    """, n, [], [], ["import ast", "import operator"])


@scenario("eval_exec")
def parse_setting(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "parse_value", "coerce_setting", "read_option"), arg=_ident(r, "raw", "text", "value"))
    return _task(r, "eval_exec", "parse_setting", [
        "Write a function that converts setting values from a text file ('3', '[1, 2]', \"{'a': 1}\") into Python values.",
        "Implement $fn(raw) that turns a string from the settings form into a number, list or dict.",
    ], """
        def $fn($arg):
            $arg = $arg.strip()
        @@HOLE@@
    """, """
        return eval($arg)
    """, """
        return ast.literal_eval($arg)
    """, n, [], [], ["import ast"])


@scenario("eval_exec")
def run_rule(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "apply_rule", "run_transform", "execute_step"), rule=_ident(r, "rule", "step", "action"))
    return _task(r, "eval_exec", "run_rule", [
        "Write a function that applies a transformation rule, sent by a client as text, to a record dict.",
        "Implement $fn(record, rule) where rule names an operation like 'upper:name' or 'strip:email'.",
    ], """
        def $fn(record: dict, $rule: str) -> dict:
            result = dict(record)
        @@HOLE@@
            return result
    """, """
        op, key = $rule.split(":", 1)
        exec(f"result[{key!r}] = result[{key!r}].{op}()", {"result": result})
    """, """
        op, key = $rule.split(":", 1)
        allowed = {"upper": str.upper, "lower": str.lower, "strip": str.strip, "title": str.title}
        if op not in allowed:
            raise ValueError(f"unknown operation {op!r}")
        result[key] = allowed[op](result[key])
    """, n, [])


# =========================================================================== weak hashes

@scenario("weak_hash")
def store_password(r: random.Random) -> CodeTask:
    one, table = r.choice(ENTITIES[:5])
    n = dict(fn=_ident(r, "register", "create_account", "sign_up", "add_user"), algo=r.choice(["md5", "sha1"]), table=table)
    return _task(r, "weak_hash", "store_password", [
        "Write a registration function that stores a new account's login credentials in the $table table.",
        "Implement $fn(conn, username, password) that saves the account with a hashed password.",
    ], """
        def $fn(conn, username, password):
        @@HOLE@@
            conn.execute("INSERT INTO $table (username, pw_hash) VALUES (?, ?)", (username, stored))
            conn.commit()
    """, """
        stored = hashlib.$algo(password.encode()).hexdigest()
    """, """
        salt = os.urandom(16)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 200_000)
        stored = salt.hex() + ":" + digest.hex()
    """, n, ["import hashlib"], [], ["import os"])


@scenario("weak_hash")
def check_login(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "check_login", "verify_credentials", "authenticate"), algo=r.choice(["md5", "sha1"]))
    return _task(r, "weak_hash", "check_login", [
        "Write a function that checks a login attempt against the stored credential hash for that user.",
        "Implement $fn(stored, attempt) returning True when the attempt matches.",
    ], """
        def $fn(stored: str, attempt: str) -> bool:
        @@HOLE@@
    """, """
        return hashlib.new("$algo", attempt.encode()).hexdigest() == stored
    """, """
        salt_hex, digest_hex = stored.split(":")
        digest = hashlib.pbkdf2_hmac("sha256", attempt.encode(), bytes.fromhex(salt_hex), 200_000)
        return hmac.compare_digest(digest.hex(), digest_hex)
    """, n, ["import hashlib"], [], ["import hmac"])


@scenario("weak_hash")
def api_key_digest(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "hash_api_key", "key_digest", "fingerprint_key"), algo=r.choice(["md5", "sha1"]))
    return _task(r, "weak_hash", "api_key_digest", [
        "Write a function that derives the value we store in the database for a customer's API key.",
        "Implement $fn(api_key) returning the digest saved for key lookups.",
    ], """
        def $fn(api_key: str) -> str:
        @@HOLE@@
    """, """
        return hashlib.$algo(api_key.encode("utf-8")).hexdigest()
    """, """
        return hashlib.sha256(api_key.encode("utf-8")).hexdigest()
    """, n, ["import hashlib"])


# =========================================================================== hard-coded secrets

@scenario("hardcoded_secret")
def db_connect(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "get_connection", "connect_db", "open_db"), user=_ident(r, "app", "service", "reporting", "admin"),
             dbname=_ident(r, "shop", "crm", "analytics", "inventory"),
             pw=r.choice(["Summer2024!", "p4ssw0rd", "Xq7#kLm2", "letmein123", "Admin#2023", "s3cr3tPass"]))
    return _task(r, "hardcoded_secret", "db_connect", [
        "Write a function that opens a PostgreSQL connection to the $dbname database for the $user account.",
        "Implement $fn() returning a psycopg2 connection to our $dbname database.",
    ], """
        def $fn():
        @@HOLE@@
            return psycopg2.connect(host="db.internal", dbname="$dbname", user="$user", password=db_password)
    """, """
        db_password = "$pw"
    """, """
        db_password = os.environ["DB_PASSWORD"]
    """, n, ["import psycopg2"], [], ["import os"])


@scenario("hardcoded_secret")
def api_client(r: random.Random) -> CodeTask:
    n = dict(host=r.choice(HOSTS), fn=_ident(r, "list_invoices", "fetch_orders", "get_metrics", "sync_contacts"),
             key="".join(r.choice("abcdef0123456789") for _ in range(32)), name=_ident(r, "API_TOKEN", "AUTH_TOKEN", "ACCESS_TOKEN"))
    return _task(r, "hardcoded_secret", "api_client", [
        "Write a client function that calls https://$host with a bearer token and returns the JSON.",
        "Implement $fn() that fetches data from our partner API using our access token.",
    ], """
        @@HOLE@@


        def $fn():
            resp = requests.get("https://$host/v1/items", headers={"Authorization": f"Bearer {$name}"}, timeout=10)
            resp.raise_for_status()
            return resp.json()
    """, """
        $name = "$key"
    """, """
        $name = os.environ["$name"]
    """, n, ["import requests"], [], ["import os"])


@scenario("hardcoded_secret")
def smtp_send(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "send_alert", "notify", "send_report", "mail_summary"), acct=r.choice(["alerts", "reports", "noreply"]),
             pw=r.choice(["mailpass99", "Welcome1!", "smtp-2024", "q1w2e3r4"]))
    return _task(r, "hardcoded_secret", "smtp_send", [
        "Write a function that emails a short message through our SMTP server from $acct@example.com.",
        "Implement $fn(to, subject, body) that logs in to smtp.example.com and sends the email.",
    ], """
        def $fn(to, subject, body):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "$acct@example.com", to, subject
            msg.set_content(body)
        @@HOLE@@
            with smtplib.SMTP_SSL("smtp.example.com", 465) as server:
                server.login("$acct@example.com", smtp_password)
                server.send_message(msg)
    """, """
        smtp_password = "$pw"
    """, """
        smtp_password = os.environ["SMTP_PASSWORD"]
    """, n, ["import smtplib", "from email.message import EmailMessage"], [], ["import os"])


@scenario("hardcoded_secret")
def default_arg(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "connect_cache", "open_redis", "cache_client"), pw=r.choice(["redispass", "cache123", "r3d1s!"]))
    return _task(r, "hardcoded_secret", "default_arg", [
        "Write a function that returns a Redis client for our cache server.",
        "Implement $fn(host) creating a redis.Redis client with authentication.",
    ], """
        @@HOLE@@


        def get_cache():
            return $fn()
    """, """
        def $fn(host="cache.internal", password="$pw"):
            return redis.Redis(host=host, port=6379, password=password)
    """, """
        def $fn(host="cache.internal", password=None):
            return redis.Redis(host=host, port=6379, password=password or os.environ["REDIS_PASSWORD"])
    """, n, ["import redis"], [], ["import os"])


# =========================================================================== chmod

@scenario("world_writable_chmod")
def write_shared_file(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "write_output", "save_report", "export_csv", "dump_results"), mode=r.choice(["0o777", "0o666", "0o776"]))
    return _task(r, "world_writable_chmod", "write_shared_file", [
        "Write a function that writes text to a file and sets its permissions so other services can read it.",
        "Implement $fn(path, text) that saves the text and adjusts the file mode afterwards.",
    ], """
        def $fn(path, text):
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            @@HOLE@@
    """, """
        os.chmod(path, $mode)
    """, """
        os.chmod(path, 0o640)
    """, n, ["import os"])


@scenario("world_writable_chmod")
def make_workdir(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "prepare_workdir", "make_spool", "ensure_dir"), mode=r.choice(["0o777", "0o757", "0o773"]))
    return _task(r, "world_writable_chmod", "make_workdir", [
        "Write a function that creates a working directory for a batch job and sets its permissions.",
        "Implement $fn(path) which creates the directory if needed and sets its mode.",
    ], """
        def $fn(path):
            os.makedirs(path, exist_ok=True)
        @@HOLE@@
            return path
    """, """
        os.chmod(path, $mode)
    """, """
        os.chmod(path, stat.S_IRWXU)
    """, n, ["import os", "import stat"])


# =========================================================================== temp files

@scenario("insecure_tempfile")
def mktemp_write(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "stage_upload", "buffer_to_disk", "spool_data", "write_scratch"), suffix=r.choice([".csv", ".json", ".bin", ".txt"]))
    return _task(r, "insecure_tempfile", "mktemp_write", [
        "Write a function that writes incoming bytes to a temporary $suffix file and returns its path.",
        "Implement $fn(data) that stages data in a scratch file for a later processing step.",
    ], """
        def $fn(data: bytes) -> str:
        @@HOLE@@
            return path
    """, """
        path = tempfile.mktemp(suffix="$suffix")
        with open(path, "wb") as fh:
            fh.write(data)
    """, """
        with tempfile.NamedTemporaryFile(suffix="$suffix", delete=False) as fh:
            fh.write(data)
            path = fh.name
    """, n, ["import tempfile"])


@scenario("insecure_tempfile")
def fixed_tmp_path(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "save_state", "write_lock", "dump_progress"), name=r.choice(["state.json", "job.lock", "progress.txt", "export.csv"]))
    return _task(r, "insecure_tempfile", "fixed_tmp_path", [
        "Write a function that saves an intermediate $name file in a temporary location and returns the path.",
        "Implement $fn(text) that persists progress to a scratch file.",
    ], """
        def $fn(text: str) -> str:
        @@HOLE@@
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            return path
    """, """
        path = "/tmp/$name"
    """, """
        fd, path = tempfile.mkstemp(suffix="-$name")
        os.close(fd)
    """, n, [], [], ["import os", "import tempfile"])


# =========================================================================== TLS

@scenario("tls_verification_disabled")
def fetch_json(r: random.Random) -> CodeTask:
    n = dict(host=r.choice(HOSTS), fn=_ident(r, "fetch_status", "get_rates", "pull_inventory", "read_feed"),
             method=r.choice(["get", "post"]))
    return _task(r, "tls_verification_disabled", "fetch_json", [
        "Write a function that calls the https://$host endpoint and returns the decoded JSON.",
        "Implement $fn(path) that requests a resource from $host over HTTPS.",
    ], """
        BASE_URL = "https://$host"


        def $fn(path):
        @@HOLE@@
            resp.raise_for_status()
            return resp.json()
    """, """
        resp = requests.$method(BASE_URL + path, verify=False, timeout=15)
    """, """
        resp = requests.$method(BASE_URL + path, timeout=15)
    """, n, ["import requests"])


@scenario("tls_verification_disabled")
def urllib_context(r: random.Random) -> CodeTask:
    n = dict(host=r.choice(HOSTS), fn=_ident(r, "download_text", "read_page", "get_document"))
    return _task(r, "tls_verification_disabled", "urllib_context", [
        "Using only the standard library, write a function that downloads a page from https://$host and returns its text.",
        "Implement $fn(url) with urllib and an explicit SSL context.",
    ], """
        def $fn(url):
        @@HOLE@@
            with urllib.request.urlopen(url, context=ctx, timeout=20) as resp:
                return resp.read().decode("utf-8")
    """, """
        ctx = ssl._create_unverified_context()
    """, """
        ctx = ssl.create_default_context()
    """, n, ["import ssl", "import urllib.request"])


# =========================================================================== XSS / autoescape

@scenario("xss_autoescape_off")
def jinja_env(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "render_profile", "render_comment", "render_page", "render_email"),
             tpl=r.choice(["profile.html", "comment.html", "page.html", "message.html"]), folder=r.choice(["templates", "views", "html"]))
    return _task(r, "xss_autoescape_off", "jinja_env", [
        "Set up a Jinja2 environment that loads HTML templates from ./$folder and write $fn(context) that renders $tpl.",
        "Write a function that renders an HTML page with user-provided fields using Jinja2.",
    ], """
        @@HOLE@@


        def $fn(context: dict) -> str:
            return env.get_template("$tpl").render(**context)
    """, r.choice(["""
        env = jinja2.Environment(loader=jinja2.FileSystemLoader("$folder"), autoescape=False)
    """, """
        env = jinja2.Environment(loader=jinja2.FileSystemLoader("$folder"))
    """]), """
        env = jinja2.Environment(loader=jinja2.FileSystemLoader("$folder"), autoescape=jinja2.select_autoescape(["html", "xml"]))
    """, n, ["import jinja2"])


@scenario("xss_autoescape_off")
def markup_comment(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "comment_html", "format_review", "render_bio", "greeting_html"), tag=r.choice(["p", "div", "li", "span"]))
    return _task(r, "xss_autoescape_off", "markup_comment", [
        "Write a function that wraps a visitor's comment in a <$tag> element for display on the page, returning Markup.",
        "Implement $fn(text) that turns user text into an HTML snippet for our template.",
    ], """
        def $fn(text: str) -> Markup:
        @@HOLE@@
    """, """
        return Markup(f"<$tag class='comment'>{text}</$tag>")
    """, """
        return Markup("<$tag class='comment'>{}</$tag>").format(text)
    """, n, ["from markupsafe import Markup"])


# =========================================================================== tar extraction

@scenario("tar_extraction")
def extract_archive(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "unpack", "extract_release", "restore_backup", "install_bundle"), dest=_ident(r, "dest", "target_dir", "out_dir"))
    return _task(r, "tar_extraction", "extract_archive", [
        "Write a function that extracts a .tar.gz archive uploaded by a user into a destination folder.",
        "Implement $fn(archive_path, dest) that unpacks a tarball.",
    ], """
        def $fn(archive_path, $dest):
            with tarfile.open(archive_path, "r:gz") as tar:
        @@HOLE@@
            return $dest
    """, """
                tar.extractall($dest)
    """, """
                tar.extractall($dest, filter="data")
    """, n, ["import tarfile"])


@scenario("tar_extraction")
def extract_stream(r: random.Random) -> CodeTask:
    n = dict(route=_ident(r, "restore", "import", "bundle"), base=r.choice(DIRS),
             fn=_ident(r, "restore_upload", "import_bundle", "receive_archive"))
    return _task(r, "tar_extraction", "extract_stream", [
        "Write a Flask endpoint that receives a tar archive in the request body and unpacks it under $base.",
        "Create a /$route route that accepts an uploaded tarball and extracts it.",
    ], """
        app = Flask(__name__)


        @app.route("/$route", methods=["POST"])
        def $fn():
            tar = tarfile.open(fileobj=io.BytesIO(request.get_data()))
        @@HOLE@@
            tar.close()
            return {"ok": True}
    """, """
        tar.extractall(path="$base")
    """, """
        tar.extractall(path="$base", filter="data")
    """, n, ["import io", "import tarfile", "from flask import Flask, request"])


# =========================================================================== bind all interfaces

@scenario("bind_all_interfaces")
def socket_server(r: random.Random) -> CodeTask:
    port = str(r.choice([5000, 8000, 8080, 9000, 9999, 7070]))
    n = dict(port=port, fn=_ident(r, "serve", "start_server", "run_echo"))
    return _task(r, "bind_all_interfaces", "socket_server", [
        "Write a small TCP echo server listening on port $port.",
        "Implement $fn() that accepts connections on port $port and echoes each line back.",
    ], """
        def $fn():
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        @@HOLE@@
            srv.listen()
            while True:
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(conn.recv(1024))
    """, """
        srv.bind(("0.0.0.0", $port))
    """, """
        srv.bind(("127.0.0.1", $port))
    """, n, ["import socket"])


@scenario("bind_all_interfaces")
def flask_host(r: random.Random) -> CodeTask:
    port = str(r.choice([5000, 8000, 8080, 8888]))
    n = dict(port=port, route=_ident(r, "health", "ping", "status"))
    return _task(r, "bind_all_interfaces", "flask_host", [
        "Write a minimal Flask app with a /$route endpoint and start it on port $port.",
        "Create a tiny Flask service exposing /$route and the code that runs it.",
    ], """
        app = Flask(__name__)


        @app.route("/$route")
        def $route():
            return {"ok": True}


        if __name__ == "__main__":
        @@HOLE@@
    """, """
        app.run(host="0.0.0.0", port=$port)
    """, """
        app.run(host="127.0.0.1", port=$port)
    """, n, ["from flask import Flask"])


# =========================================================================== weak random tokens

@scenario("weak_random_token")
def reset_code(r: random.Random) -> CodeTask:
    k = str(r.choice([16, 24, 32]))
    n = dict(fn=_ident(r, "make_reset_code", "new_invite_code", "generate_session_id", "new_api_key"), k=k)
    return _task(r, "weak_random_token", "reset_code", [
        "Write a function that generates a $k-character code we email to users for account recovery.",
        "Implement $fn() returning a random $k-character alphanumeric code for login links.",
    ], """
        ALPHABET = string.ascii_letters + string.digits


        def $fn(length=$k):
        @@HOLE@@
    """, r.choice(["""
        return "".join(random.choice(ALPHABET) for _ in range(length))
    """, """
        return "".join(random.choices(ALPHABET, k=length))
    """]), """
        return "".join(secrets.choice(ALPHABET) for _ in range(length))
    """, n, ["import string"], ["import random"], ["import secrets"])


@scenario("weak_random_token")
def session_id(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "new_session_id", "make_nonce", "issue_id"))
    return _task(r, "weak_random_token", "session_id", [
        "Write a function that creates a new session identifier (hex string) for a logged-in user.",
        "Implement $fn() returning a fresh 128-bit identifier as hex for web sessions.",
    ], """
        def $fn() -> str:
        @@HOLE@@
    """, """
        return "%032x" % random.getrandbits(128)
    """, """
        return secrets.token_hex(16)
    """, n, [], ["import random"], ["import secrets"])


# =========================================================================== assert for auth

@scenario("assert_for_auth")
def admin_delete(r: random.Random) -> CodeTask:
    one, table = r.choice(ENTITIES)
    n = dict(fn=f"remove_{one}", one=one, table=table, attr=r.choice(["is_admin", "is_staff", "can_delete"]))
    return _task(r, "assert_for_auth", "admin_delete", [
        "Write a function that lets an administrator delete a $one; only users with $attr may do it.",
        "Implement $fn(current_user, db, item_id), allowed only for privileged users.",
    ], """
        def $fn(current_user, db, item_id):
        @@HOLE@@
            db.execute("DELETE FROM $table WHERE id = ?", (item_id,))
            db.commit()
    """, """
        assert current_user.$attr, "not allowed"
    """, """
        if not current_user.$attr:
            raise PermissionError("not allowed")
    """, n, [])


@scenario("assert_for_auth")
def owner_check(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "update_document", "edit_post", "rename_project"))
    return _task(r, "assert_for_auth", "owner_check", [
        "Write a function that renames a resource, but only if the requesting user owns it.",
        "Implement $fn(user, doc, new_title) that checks ownership before changing the title.",
    ], """
        def $fn(user, doc, new_title):
        @@HOLE@@
            doc.title = new_title
            doc.save()
            return doc
    """, """
        assert doc.owner_id == user.id
    """, """
        if doc.owner_id != user.id:
            raise PermissionError("only the owner can change this")
    """, n, [])


# =========================================================================== debug mode

@scenario("debug_mode_enabled")
def flask_debug(r: random.Random) -> CodeTask:
    n = dict(route=_ident(r, "items", "orders", "profile", "search"), port=str(r.choice([5000, 8000, 8080])))
    return _task(r, "debug_mode_enabled", "flask_debug", [
        "Write a Flask app with a /$route endpoint returning a JSON list, and the code that starts it for production.",
        "Create a small Flask API exposing /$route and run it on port $port.",
    ], """
        app = Flask(__name__)


        @app.route("/$route")
        def $route():
            return jsonify([])


        if __name__ == "__main__":
        @@HOLE@@
    """, """
        app.run(port=$port, debug=True)
    """, """
        app.run(port=$port, debug=False)
    """, n, ["from flask import Flask, jsonify"])


# =========================================================================== XML

@scenario("xml_external_entities")
def parse_xml_upload(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "parse_invoice", "read_feed", "import_catalog", "load_sitemap"), tag=r.choice(["item", "entry", "product", "url"]))
    return _task(r, "xml_external_entities", "parse_xml_upload", [
        "Write a function that parses an XML document posted by a partner and returns the text of every <$tag> element.",
        "Implement $fn(xml_bytes) that extracts all $tag elements from an uploaded XML file.",
    ], """
        def $fn(xml_bytes):
        @@HOLE@@
            return [el.text for el in root.iter("$tag")]
    """, """
        root = ET.fromstring(xml_bytes)
    """, """
        root = DET.fromstring(xml_bytes)
    """, n, [], ["import xml.etree.ElementTree as ET"], ["import defusedxml.ElementTree as DET"])


@scenario("xml_external_entities")
def minidom_parse(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "count_nodes", "read_settings_xml", "list_titles"), tag=r.choice(["title", "setting", "node"]))
    return _task(r, "xml_external_entities", "minidom_parse", [
        "Write a function that reads an XML string received from a client with minidom and returns the values of all <$tag> nodes.",
    ], """
        def $fn(text):
        @@HOLE@@
            return [n.firstChild.nodeValue for n in doc.getElementsByTagName("$tag") if n.firstChild]
    """, """
        doc = minidom.parseString(text)
    """, """
        doc = defused_minidom.parseString(text)
    """, n, [], ["from xml.dom import minidom"], ["import defusedxml.minidom as defused_minidom"])


# =========================================================================== SSH host keys

@scenario("ssh_host_key_unchecked")
def ssh_run(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "run_remote", "deploy", "restart_service", "collect_logs"), user=r.choice(["deploy", "ops", "ubuntu"]))
    return _task(r, "ssh_host_key_unchecked", "ssh_run", [
        "Write a function that connects over SSH with paramiko as '$user' and runs one command on a remote host.",
        "Implement $fn(host, command) using paramiko and key-based login; return stdout.",
    ], """
        def $fn(host, command):
            client = paramiko.SSHClient()
        @@HOLE@@
            client.connect(host, username="$user", key_filename=os.path.expanduser("~/.ssh/id_ed25519"))
            _, stdout, _ = client.exec_command(command)
            out = stdout.read().decode()
            client.close()
            return out
    """, """
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    """, """
        client.load_system_host_keys()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    """, n, ["import os", "import paramiko"])


# =========================================================================== more tasks

@scenario("command_injection")
def dns_lookup(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "lookup", "resolve_domain", "dns_info"), tool=r.choice(["nslookup", "host", "dig"]))
    return _task(r, "command_injection", "dns_lookup", [
        "Write a function that returns the output of `$tool` for a domain name entered in a web form.",
        "Implement $fn(domain) that runs $tool on a domain and returns what it prints.",
    ], """
        def $fn(domain: str) -> str:
        @@HOLE@@
            return out.strip()
    """, """
        out = subprocess.getoutput(f"$tool {domain}")
    """, """
        out = subprocess.run(["$tool", domain], capture_output=True, text=True).stdout
    """, n, ["import subprocess"])


@scenario("sql_injection")
def sorted_listing(r: random.Random) -> CodeTask:
    one, table = r.choice(ENTITIES)
    n = dict(table=table, fn=f"list_{table}", cols=r.choice(["id, name", "id, name, created_at", "id, title, status"]))
    return _task(r, "sql_injection", "sorted_listing", [
        "Write a function that lists all $table sorted by a column the client chooses (?sort=...).",
        "Implement $fn(cursor, sort) returning rows of $table ordered by the requested column.",
    ], """
        def $fn(cursor, sort):
        @@HOLE@@
            return cursor.fetchall()
    """, """
        cursor.execute("SELECT $cols FROM $table ORDER BY " + sort)
    """, """
        queries = {
            "id": "SELECT $cols FROM $table ORDER BY id",
            "name": "SELECT $cols FROM $table ORDER BY name",
            "created": "SELECT $cols FROM $table ORDER BY created_at",
        }
        if sort not in queries:
            raise ValueError(f"cannot sort by {sort!r}")
        cursor.execute(queries[sort])
    """, n, [])


@scenario("tls_verification_disabled")
def httpx_client(r: random.Random) -> CodeTask:
    n = dict(host=r.choice(HOSTS), fn=_ident(r, "post_event", "send_webhook", "push_metrics"))
    return _task(r, "tls_verification_disabled", "httpx_client", [
        "Write a function that posts a JSON event to https://$host/events with httpx and returns the status code.",
        "Implement $fn(event) using an httpx.Client to deliver a webhook payload.",
    ], """
        def $fn(event: dict) -> int:
        @@HOLE@@
                resp = client.post("https://$host/events", json=event)
            return resp.status_code
    """, """
        with httpx.Client(verify=False, timeout=10) as client:
    """, """
        with httpx.Client(timeout=10) as client:
    """, n, ["import httpx"])


@scenario("bind_all_interfaces")
def http_server(r: random.Random) -> CodeTask:
    port = str(r.choice([8000, 8080, 8888, 9090]))
    n = dict(port=port, fn=_ident(r, "serve_directory", "share_files", "run_preview"))
    return _task(r, "bind_all_interfaces", "http_server", [
        "Write a function that serves the current directory over HTTP on port $port using the standard library.",
        "Implement $fn() that starts a simple file-preview HTTP server on port $port.",
    ], """
        def $fn():
        @@HOLE@@
            server.serve_forever()
    """, """
        server = http.server.HTTPServer(("0.0.0.0", $port), http.server.SimpleHTTPRequestHandler)
    """, """
        server = http.server.HTTPServer(("127.0.0.1", $port), http.server.SimpleHTTPRequestHandler)
    """, n, ["import http.server"])


@scenario("hardcoded_secret")
def flask_session_key(r: random.Random) -> CodeTask:
    n = dict(key=r.choice(["dev-key-123", "change-me", "flask-app-key", "k9#Pq2!zz"]), route=_ident(r, "login", "visit", "counter"))
    return _task(r, "hardcoded_secret", "flask_session_key", [
        "Write a Flask app that counts a visitor's page views in the session (/$route).",
        "Create a Flask app configured for signed session cookies with a /$route view.",
    ], """
        app = Flask(__name__)
        @@HOLE@@


        @app.route("/$route")
        def $route():
            session["views"] = session.get("views", 0) + 1
            return {"views": session["views"]}
    """, """
        app.secret_key = "$key"
    """, """
        app.secret_key = os.environ["FLASK_SECRET_KEY"]
    """, n, ["from flask import Flask, session"], [], ["import os"])


@scenario("xss_autoescape_off")
def jinja_from_string(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "render_snippet", "render_banner", "fill_template"))
    return _task(r, "xss_autoescape_off", "jinja_from_string", [
        "Write a function that renders an HTML snippet template (a string) with values submitted by users.",
        "Implement $fn(template_text, values) with Jinja2 that returns HTML for a page.",
    ], """
        def $fn(template_text: str, values: dict) -> str:
        @@HOLE@@
            return env.from_string(template_text).render(**values)
    """, """
        env = jinja2.Environment()
    """, """
        env = jinja2.Environment(autoescape=True)
    """, n, ["import jinja2"])


@scenario("weak_random_token")
def otp_code(r: random.Random) -> CodeTask:
    digits = r.choice([4, 6, 8])
    n = dict(fn=_ident(r, "new_otp", "make_pin", "verification_code"), lo=str(10 ** (digits - 1)), hi=str(10 ** digits - 1),
             span=str(10 ** digits - 10 ** (digits - 1)), d=str(digits))
    return _task(r, "weak_random_token", "otp_code", [
        "Write a function that generates the $d-digit one-time code we text to users at login.",
        "Implement $fn() returning a fresh $d-digit verification code as a string.",
    ], """
        def $fn() -> str:
        @@HOLE@@
    """, """
        return str(random.randint($lo, $hi))
    """, """
        return str(secrets.randbelow($span) + $lo)
    """, n, [], ["import random"], ["import secrets"])


@scenario("eval_exec")
def format_message(r: random.Random) -> CodeTask:
    n = dict(fn=_ident(r, "render_message", "format_notice", "expand_template"))
    return _task(r, "eval_exec", "format_message", [
        "Write a function that fills a notification template such as 'Hello {name}, you have {count} messages' from a dict of values.",
        "Implement $fn(template, values) for customer-editable message templates.",
    ], """
        def $fn(template: str, values: dict) -> str:
        @@HOLE@@
    """, """
        return eval("f" + repr(template), {}, dict(values))
    """, """
        return template.format_map(dict(values))
    """, n, [])


VULN_CLASSES: tuple[str, ...] = tuple(dict.fromkeys(c for c, _, _ in SCENARIOS))
