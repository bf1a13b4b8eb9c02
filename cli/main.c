/* main.c — the cunet executable: Lua 5.4 with the cunet library on its path and a readline REPL.
 *
 *   cunet [options] [script [args]]      options as lua5.4: -e stat, -i, -l mod, -l g=mod, -v, -E, -W, --, -
 *   cunet                                a REPL on a terminal; standard input run as one chunk otherwise
 *
 * The command line, the global `arg`, LUA_INIT and LUA_PATH behave as in the stand-alone lua5.4, so a
 * script moves between the two unchanged. On top of that, `require "cunet.core"` is the binding linked
 * into this executable, and `require "cunet"` finds the Lua library beside the executable (see
 * find_luadir). The REPL prints expression values (plain tables as Lua source, through
 * lua/cunet/repl.lua), completes names along metatables' __index chains, keeps its history in
 * ~/.cunet_history and stops a running computation on Ctrl-C without leaving. docs/cli.md is the manual.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lua/binding.h"

#ifndef CUNET_VERSION
#define CUNET_VERSION "unknown"
#endif
#ifndef CUNET_LUADIR
#define CUNET_LUADIR "/usr/local/share/cunet/lua"
#endif

#define PROGNAME "cunet"
#define HISTORY_MAX 1000

/* What the option scan found. */
enum {
    HAS_ERROR = -1,
    HAS_E = 1,      /* -e: code to run, so no REPL by default */
    HAS_I = 2,      /* -i: REPL after the script */
    HAS_V = 4,      /* -v/--version */
    HAS_NOENV = 8,  /* -E */
    HAS_HELP = 16,  /* -h/--help */
};

/* Results of reading a line or a statement in the REPL (besides the LUA_* status codes). */
enum { READ_OK = 0, READ_EOF = -1, READ_INTERRUPTED = -2 };

static const char usage_text[] =
    "usage: " PROGNAME " [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat        execute string 'stat'\n"
    "  -i             enter interactive mode after executing 'script'\n"
    "  -l mod         require library 'mod' into global 'mod'\n"
    "  -l g=mod       require library 'mod' into global 'g'\n"
    "  -v, --version  show version information\n"
    "  -E             ignore environment variables (LUA_INIT, LUA_PATH, LUA_CPATH)\n"
    "  -W             turn warnings on\n"
    "  -h, --help     show this help\n"
    "  --             stop handling options\n"
    "  -              stop handling options and execute stdin\n"
    "With no script and no -e, " PROGNAME " opens a REPL on a terminal and runs stdin otherwise.\n";

/* The state the SIGINT handler interrupts. Set before each protected call. */
static lua_State *interrupt_L;
/* Set by the SIGINT handler while a computation runs; cleared when its hook is removed. */
static volatile sig_atomic_t interrupt_pending;
/* Set when stop_hook raised "interrupted!", so the REPL starts its message on a fresh line. */
static int interrupted_by_user;
/* Set by the SIGINT handler while the REPL waits for a line. */
static volatile sig_atomic_t prompt_interrupted;

/* ---------------------------------------------------------------- messages */

static void print_message(const char *progname, const char *msg)
{
    if (progname)
        fprintf(stderr, "%s: ", progname);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

/* Prints the error message at the top of the stack (when status is an error) and pops it. */
static int report(lua_State *L, int status, const char *progname)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        print_message(progname, msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
    }
    return status;
}

static void print_version(void)
{
    printf(PROGNAME " %s (%s)\n", CUNET_VERSION, LUA_RELEASE);
    fflush(stdout);
}

/* ---------------------------------------------------------------- protected calls and Ctrl-C */

/* Count hook installed by the SIGINT handler: the running Lua code stops at its next instruction. */
static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    interrupt_pending = 0;
    interrupted_by_user = 1;
    luaL_error(L, "interrupted!");
}

/* SIGINT during a computation. lua_sethook is safe to call from a signal handler (Lua manual §4.7);
 * the handler is one-shot (SA_RESETHAND), so a second Ctrl-C in a long C kernel ends the process. */
static void on_sigint_running(int sig)
{
    (void)sig;
    interrupt_pending = 1;
    lua_sethook(interrupt_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void on_sigint_prompt(int sig)
{
    (void)sig;
    prompt_interrupted = 1;
}

static void set_sigint(void (*handler)(int), int flags, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, old);
}

/* Whether errors print without a traceback: a recipe has parsed its command line (lua/cunet/cli.lua
 * sets short_errors), so its errors are a user's to read; CUNET_TRACEBACK=1 brings tracebacks back. */
static int short_errors(lua_State *L)
{
    const char *env = getenv("CUNET_TRACEBACK");
    if (env && *env && strcmp(env, "0") != 0)
        return 0;
    int on = 0;
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE &&
        lua_getfield(L, -1, "cunet.cli") == LUA_TTABLE) {
        lua_getfield(L, -1, "short_errors");
        on = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    return on;
}

/* Message handler of every protected call: the message (or a description of a non-string error
 * object) followed by a traceback (none after a recipe's cli.parse: see short_errors). */
static int message_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    } else if (short_errors(L)) {
        return 1;
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Calls the function below its narg arguments with a traceback handler and Ctrl-C armed. */
static int docall(lua_State *L, int narg, int nres)
{
    struct sigaction old;
    int base = lua_gettop(L) - narg;
    int status;

    lua_pushcfunction(L, message_handler);
    lua_insert(L, base);
    interrupt_L = L;
    interrupt_pending = 0;
    set_sigint(on_sigint_running, SA_RESETHAND, &old);
    status = lua_pcall(L, narg, nres, base);
    sigaction(SIGINT, &old, NULL);
    /* A Ctrl-C that came while C code ran to the end leaves its hook behind: drop it, unless the
     * code replaced it with its own debug hook. */
    if (interrupt_pending && lua_gethook(L) == stop_hook)
        lua_sethook(L, NULL, 0, 0);
    interrupt_pending = 0;
    lua_remove(L, base);
    return status;
}

static int dochunk(lua_State *L, int status)
{
    if (status == LUA_OK)
        status = docall(L, 0, 0);
    return report(L, status, PROGNAME);
}

static int dofile(lua_State *L, const char *name)
{
    return dochunk(L, luaL_loadfile(L, name));
}

static int dostring(lua_State *L, const char *code, const char *chunkname)
{
    return dochunk(L, luaL_loadbuffer(L, code, strlen(code), chunkname));
}

/* -l mod or -l g=mod: g = require "mod". */
static int dolibrary(lua_State *L, const char *spec)
{
    const char *eq = strchr(spec, '=');
    int status;

    lua_getglobal(L, "require");
    lua_pushstring(L, eq ? eq + 1 : spec);
    status = docall(L, 1, 1);
    if (status == LUA_OK) {
        if (eq)
            lua_pushlstring(L, spec, (size_t)(eq - spec));
        else
            lua_pushstring(L, spec);
        lua_insert(L, -2);
        lua_setglobal(L, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    return report(L, status, PROGNAME);
}

/* ---------------------------------------------------------------- command line */

/* Scans the options before the script. Returns HAS_* flags, or HAS_ERROR with *bad = the index of
 * the offending argument. *script = the index of the script (argc when there is none). */
static int scan_options(int argc, char **argv, int *script, int *bad)
{
    int flags = 0;
    int i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        *script = i;
        if (a[0] != '-' || a[1] == '\0')  /* the script, or "-" for stdin */
            return flags;
        if (strcmp(a, "--") == 0) {
            *script = i + 1;
            return flags;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            flags |= HAS_HELP;
            continue;
        }
        if (strcmp(a, "--version") == 0) {
            flags |= HAS_V;
            continue;
        }
        switch (a[1]) {
        case 'e':
        case 'l':
            if (a[1] == 'e')
                flags |= HAS_E;
            if (a[2] == '\0' && ++i >= argc) {  /* needs an argument, attached or next */
                *bad = i - 1;
                return HAS_ERROR;
            }
            break;
        case 'i':
        case 'v':
        case 'E':
        case 'W':
            if (a[2] != '\0') {
                *bad = i;
                return HAS_ERROR;
            }
            flags |= a[1] == 'i' ? HAS_I | HAS_V : a[1] == 'v' ? HAS_V : a[1] == 'E' ? HAS_NOENV : 0;
            break;
        default:
            *bad = i;
            return HAS_ERROR;
        }
    }
    *script = argc;
    return flags;
}

/* The global `arg` as lua5.4 makes it: arg[0] the script, arg[1..] its arguments, the interpreter and
 * options at negative indices. With no script, arg[0] is the interpreter. */
static void create_arg_table(lua_State *L, int argc, char **argv, int script)
{
    int i;
    if (script == argc)
        script = 0;
    lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

/* Runs -e, -l and -W in command-line order, up to the script. Returns 0 when one of them failed. */
static int run_options(lua_State *L, char **argv, int script)
{
    int i;
    for (i = 1; i < script; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            break;
        if (a[1] == 'e' || a[1] == 'l') {
            const char *value = a[2] != '\0' ? a + 2 : argv[++i];
            int status = a[1] == 'e' ? dostring(L, value, "=(command line)") : dolibrary(L, value);
            if (status != LUA_OK)
                return 0;
        } else if (a[1] == 'W') {
            lua_warning(L, "@on", 0);
        }
    }
    return 1;
}

/* Runs the script at argv[script] with argv[script+1..] as `...`; "-" (not after "--") is stdin. */
static int run_script(lua_State *L, int argc, char **argv, int script)
{
    const char *name = argv[script];
    int status;
    int i;

    if (strcmp(name, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
        name = NULL;
    status = luaL_loadfile(L, name);
    if (status == LUA_OK) {
        luaL_checkstack(L, argc - script, "too many arguments to script");
        for (i = script + 1; i < argc; i++)
            lua_pushstring(L, argv[i]);
        status = docall(L, argc - script - 1, LUA_MULTRET);
    }
    return report(L, status, PROGNAME);
}

/* LUA_INIT_5_4, else LUA_INIT: "@file" runs the file, anything else runs as code. */
static int run_lua_init(lua_State *L)
{
    const char *name = "=LUA_INIT_5_4";
    const char *init = getenv(name + 1);
    if (init == NULL) {
        name = "=LUA_INIT";
        init = getenv(name + 1);
    }
    if (init == NULL)
        return LUA_OK;
    if (init[0] == '@')
        return dofile(L, init + 1);
    return dostring(L, init, name);
}

/* ---------------------------------------------------------------- library path */

/* Copies the canonical form of dir to out when dir/cunet/init.lua is readable. */
static int is_luadir(const char *dir, char *out)
{
    char probe[PATH_MAX];
    int n = snprintf(probe, sizeof probe, "%s/cunet/init.lua", dir);
    if (n < 0 || (size_t)n >= sizeof probe || access(probe, R_OK) != 0)
        return 0;
    return realpath(dir, out) != NULL;
}

/* The directory holding the cunet Lua library: beside the executable (<exedir>/lua for ./cunet in
 * the source tree, <exedir>/../lua for build/cunet, <exedir>/../share/cunet/lua once installed),
 * else the compiled-in CUNET_LUADIR, which is also the answer when no candidate has cunet/init.lua. */
static void find_luadir(char *out)
{
    static const char *const relative[] = {"/lua", "/../lua", "/../share/cunet/lua"};
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);

    if (len > 0) {
        char *slash;
        size_t i;
        exe[len] = '\0';
        slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        for (i = 0; i < sizeof relative / sizeof relative[0]; i++) {
            char dir[PATH_MAX];
            int n = snprintf(dir, sizeof dir, "%s%s", exe, relative[i]);
            if (n > 0 && (size_t)n < sizeof dir && is_luadir(dir, out))
                return;
        }
    }
    if (!is_luadir(CUNET_LUADIR, out))
        snprintf(out, PATH_MAX, "%s", CUNET_LUADIR);
}

/* package.preload["cunet.core"], the library directory in front of package.path, and CUNET_LUADIR. */
static void setup_cunet(lua_State *L)
{
    char dir[PATH_MAX];

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_cunet_core);
    lua_setfield(L, -2, "cunet.core");
    lua_pop(L, 1);

    find_luadir(dir);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
    lua_pushstring(L, dir);
    lua_setglobal(L, "CUNET_LUADIR");
}

/* ---------------------------------------------------------------- REPL: reading lines */

/* Where history lives: $CUNET_HISTORY (empty: no history), else ~/.cunet_history. */
static const char *history_path(char *buf, size_t size)
{
    const char *env = getenv("CUNET_HISTORY");
    const char *home = getenv("HOME");
    int n;
    if (env)
        return env[0] != '\0' ? env : NULL;
    if (home == NULL || home[0] == '\0')
        return NULL;
    n = snprintf(buf, size, "%s/.cunet_history", home);
    return n > 0 && (size_t)n < size ? buf : NULL;
}

/* Adds a line to the history and to the file right away, so a session that ends abruptly keeps it.
 * Failing to write is not an error: history is a convenience. */
static void remember_line(const char *line, const char *path)
{
    HIST_ENTRY *last;
    if (line[0] == '\0')
        return;
    last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, line) == 0)
        return;
    add_history(line);
    if (path) {
        if (access(path, F_OK) != 0)
            write_history(path);  /* append_history needs an existing file */
        else
            append_history(1, path);
    }
}

static char *readline_result;
static int readline_done;

static void on_readline_line(char *line)
{
    readline_result = line;
    readline_done = 1;
    rl_callback_handler_remove();
}

/* Reads a line with readline's callback interface, so that Ctrl-C, caught by our handler while we
 * wait in poll(), can abandon the line and give a fresh prompt. *line is malloc'ed. */
static int read_tty_line(const char *prompt, char **line)
{
    struct sigaction old;
    int result = READ_OK;

    prompt_interrupted = 0;
    readline_done = 0;
    readline_result = NULL;
    set_sigint(on_sigint_prompt, 0, &old);
    rl_eof_found = 0;  /* the callback interface leaves it set after a Ctrl-D */
    rl_callback_handler_install(prompt, on_readline_line);
    while (!readline_done) {
        struct pollfd pfd;
        int ready;
        if (prompt_interrupted) {
            rl_point = rl_end;  /* "^C" after the abandoned text, as shells show it */
            rl_redisplay();
            rl_echo_signal_char(SIGINT);
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_cleanup_after_signal();
            rl_callback_handler_remove();
            fputc('\n', stdout);
            fflush(stdout);
            result = READ_INTERRUPTED;
            break;
        }
        pfd.fd = fileno(rl_instream ? rl_instream : stdin);
        pfd.events = POLLIN;
        pfd.revents = 0;
        ready = poll(&pfd, 1, -1);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0) {
            rl_callback_handler_remove();
            result = READ_EOF;
            break;
        }
        rl_callback_read_char();
    }
    sigaction(SIGINT, &old, NULL);
    if (result == READ_OK && readline_result == NULL) {
        /* Readline 8 ends the line itself on Ctrl-D when bracketed paste is on; else we do. */
        const char *paste = rl_variable_value("enable-bracketed-paste");
        if (!(rl_eof_found && paste && strcmp(paste, "on") == 0))
            fputc('\n', stdout);
        result = READ_EOF;
    }
    *line = readline_result;
    return result;
}

/* Without a terminal (cunet -i < file): prompt, then a plain line. */
static int read_plain_line(const char *prompt, char **line)
{
    size_t cap = 0;
    ssize_t len;

    *line = NULL;
    fputs(prompt, stdout);
    fflush(stdout);
    len = getline(line, &cap, stdin);
    if (len < 0) {
        fputc('\n', stdout);
        free(*line);
        *line = NULL;
        return READ_EOF;
    }
    if (len > 0 && (*line)[len - 1] == '\n')
        (*line)[len - 1] = '\0';
    return READ_OK;
}

struct repl {
    lua_State *L;
    int tty;           /* stdin is a terminal: readline and history */
    const char *hist;  /* history file, or NULL */
};

/* Reads a line with the prompt from _PROMPT/_PROMPT2 (read raw, so a strict _G cannot raise here)
 * and pushes it. Returns READ_OK, READ_EOF or READ_INTERRUPTED. */
static int push_line(struct repl *r, int first)
{
    lua_State *L = r->L;
    const char *prompt;
    char *line;
    int result;

    lua_pushglobaltable(L);
    lua_pushstring(L, first ? "_PROMPT" : "_PROMPT2");
    lua_rawget(L, -2);
    lua_remove(L, -2);
    prompt = lua_tostring(L, -1);
    if (prompt == NULL)
        prompt = first ? "> " : ">> ";
    result = r->tty ? read_tty_line(prompt, &line) : read_plain_line(prompt, &line);
    lua_pop(L, 1);
    if (result != READ_OK)
        return result;
    if (r->tty)
        remember_line(line, r->hist);
    lua_pushstring(L, line);
    free(line);
    return READ_OK;
}

/* A syntax error that ends at <eof> means the statement goes on in the next line (pops it then). */
static int incomplete(lua_State *L, int status)
{
    static const char mark[] = "<eof>";
    const size_t mark_len = sizeof mark - 1;
    size_t len;
    const char *msg;

    if (status != LUA_ERRSYNTAX)
        return 0;
    msg = lua_tolstring(L, -1, &len);
    if (len < mark_len || strcmp(msg + len - mark_len, mark) != 0)
        return 0;
    lua_pop(L, 1);
    return 1;
}

/* The level of a long bracket `[==[` starting at code[i] (the count of '='), or -1. */
static int long_bracket(const char *code, size_t len, size_t i)
{
    size_t j = i + 1;
    if (code[i] != '[')
        return -1;
    while (j < len && code[j] == '=')
        j++;
    return j < len && code[j] == '[' ? (int)(j - i - 1) : -1;
}

/* The offset just past the long string or comment body opened by a bracket of this level at i. */
static size_t skip_long(const char *code, size_t len, size_t i, int level)
{
    for (i += (size_t)level + 2; i < len; i++) {
        size_t j = i + 1;
        if (code[i] != ']')
            continue;
        while (j < len && code[j] == '=')
            j++;
        if (j < len && code[j] == ']' && (int)(j - i - 1) == level)
            return j + 1;
    }
    return len;
}

#define MAX_SPLITS 64

/* Fills at[] with the offsets of the `;` of code outside strings and comments (the last MAX_SPLITS
 * of them, in a ring) and returns how many there were. */
static size_t statement_ends(const char *code, size_t len, size_t *at)
{
    size_t count = 0;
    size_t i = 0;
    while (i < len) {
        char c = code[i];
        int level;
        if (c == '-' && i + 1 < len && code[i + 1] == '-') {  /* a comment, long or to the line's end */
            i += 2;
            level = i < len ? long_bracket(code, len, i) : -1;
            if (level >= 0) {
                i = skip_long(code, len, i, level);
            } else {
                while (i < len && code[i] != '\n')
                    i++;
            }
        } else if (c == '"' || c == '\'') {
            for (i++; i < len && code[i] != c && code[i] != '\n'; i++)
                if (code[i] == '\\')
                    i++;
            i++;
        } else if ((level = long_bracket(code, len, i)) >= 0) {
            i = skip_long(code, len, i, level);
        } else {
            if (c == ';')
                at[count++ % MAX_SPLITS] = i;
            i++;
        }
    }
    return count;
}

/* `a = f(); a`: statements, then an expression after a `;`. Lua reads the trailing `a` as the start
 * of a statement and asks for more (`x + y` there is an error, and `f()` runs unseen); the REPL
 * compiles `<statements>; return a` instead, so the line runs and shows a's value, as the same
 * expression alone on a line would. Splits only at a `;` outside strings and comments, the last
 * first. Pushes the function and returns 1, or pushes nothing. */
static int load_trailing_expression(lua_State *L, const char *code, size_t len)
{
    size_t at[MAX_SPLITS];
    size_t count = statement_ends(code, len, at);
    size_t k;
    for (k = count; k > 0 && count - k < MAX_SPLITS; k--) {
        size_t i = at[(k - 1) % MAX_SPLITS];
        size_t chunk_len;
        const char *chunk;
        int status;
        /* the statements must be complete on their own, or the `return` would land inside a block
         * (`for i = 1, 3 do x = i; f(i) end` must not become one iteration returning f(1)) */
        status = luaL_loadbuffer(L, code, i + 1, "=stdin");
        lua_pop(L, 1);
        if (status != LUA_OK)
            continue;
        lua_pushlstring(L, code, i + 1);
        lua_pushliteral(L, " return ");
        lua_pushlstring(L, code + i + 1, len - i - 1);
        lua_concat(L, 3);
        chunk = lua_tolstring(L, -1, &chunk_len);
        status = luaL_loadbuffer(L, chunk, chunk_len, "=stdin");
        lua_remove(L, -2);
        if (status == LUA_OK)
            return 1;
        lua_pop(L, 1);
    }
    return 0;
}

/* Reads one statement and leaves its compiled function (status LUA_OK) or error message on the
 * stack. The first line is tried as `return <line>` so that an expression shows its value, then as
 * statements followed by an expression (load_trailing_expression), then as statements; a
 * statement that is incomplete reads more lines. May return READ_EOF or READ_INTERRUPTED, with
 * nothing pushed. */
static int read_statement(struct repl *r)
{
    lua_State *L = r->L;
    int base = lua_gettop(L);
    int status;

    status = push_line(r, 1);
    if (status != READ_OK)
        return status;
    {
        const char *code = lua_pushfstring(L, "return %s", lua_tostring(L, -1));
        status = luaL_loadbuffer(L, code, strlen(code), "=stdin");
        if (status == LUA_OK) {
            lua_replace(L, base + 1);
            lua_settop(L, base + 1);
            return LUA_OK;
        }
        lua_pop(L, 2);
    }
    for (;;) {
        size_t len;
        const char *code = lua_tolstring(L, base + 1, &len);
        int more;
        if (load_trailing_expression(L, code, len)) {
            status = LUA_OK;
            break;
        }
        status = luaL_loadbuffer(L, code, len, "=stdin");
        if (!incomplete(L, status))
            break;
        more = push_line(r, 0);
        if (more == READ_INTERRUPTED) {
            lua_settop(L, base);
            return READ_INTERRUPTED;
        }
        if (more == READ_EOF) {  /* report the incomplete statement, as lua5.4 does */
            status = luaL_loadbuffer(L, code, len, "=stdin");
            break;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
    lua_remove(L, base + 1);
    return status;
}

/* ---------------------------------------------------------------- REPL: printing and completion */

/* Pushes require("cunet.repl").pretty, or nil when the library cannot give it (-E, a broken
 * path): the REPL then prints through tostring alone. Tried once per session. */
static void push_formatter(lua_State *L)
{
    static int unavailable;
    int top = lua_gettop(L);
    if (!unavailable) {
        lua_getglobal(L, "require");
        lua_pushliteral(L, "cunet.repl");
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1) &&
            lua_getfield(L, -1, "pretty") == LUA_TFUNCTION) {
            lua_remove(L, -2);
            return;
        }
        unavailable = 1;
        lua_settop(L, top);
    }
    lua_pushnil(L);
}

/* print_values(...): `_` = the first value, then every value tab-separated, each through
 * cunet.repl's pretty (a plain table as `{2, 3}` or `{live = 1024, peak = 2048}`; anything else
 * through tostring, so tensors and modules print as print shows them). */
static int print_values(lua_State *L)
{
    int n = lua_gettop(L);
    int formatter;
    int i;
    lua_pushvalue(L, 1);
    lua_setglobal(L, "_");
    push_formatter(L);
    formatter = lua_gettop(L);
    for (i = 1; i <= n; i++) {
        size_t len;
        const char *s = NULL;
        if (!lua_isnil(L, formatter)) {
            lua_pushvalue(L, formatter);
            lua_pushvalue(L, i);
            if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING)
                lua_pop(L, 1);
            else
                s = lua_tolstring(L, -1, &len);
        }
        if (s == NULL)
            s = luaL_tolstring(L, i, &len);
        if (i > 1)
            fputc('\t', stdout);
        fwrite(s, 1, len, stdout);
        lua_pop(L, 1);
    }
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}

/* Appends to the table at index t the string keys of the table at index src that start with part,
 * prefixed by prefix (prefix_len bytes) — only keys that are identifiers, each once (the table at
 * index seen remembers them), and names starting with `_` only when part does. */
static void add_matches(lua_State *L, int t, int seen, int src, const char *prefix, size_t prefix_len,
                        const char *part)
{
    size_t part_len = strlen(part);
    lua_pushnil(L);
    while (lua_next(L, src) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t len;
            const char *key = lua_tolstring(L, -2, &len);
            size_t j;
            int ident = len > 0 && strncmp(key, part, part_len) == 0 && (key[0] != '_' || part[0] == '_');
            for (j = 0; ident && j < len; j++) {
                unsigned char c = (unsigned char)key[j];
                ident = c == '_' || (c >= '0' && c <= '9' && j > 0) || ((c | 32) >= 'a' && (c | 32) <= 'z');
            }
            lua_pushvalue(L, -2);
            if (ident && lua_rawget(L, seen) == LUA_TNIL) {
                lua_pushvalue(L, -3);
                lua_pushboolean(L, 1);
                lua_rawset(L, seen);
                lua_pushlstring(L, prefix, prefix_len);
                lua_pushvalue(L, -4);
                lua_concat(L, 2);
                lua_rawseti(L, t, (lua_Integer)lua_rawlen(L, t) + 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
}

/* A cunet nn.Module keeps its children, parameters and buffers in registries, not in the instance
 * (lua/cunet/nn/module.lua): pushes each registry's `value` table of the table at idx. */
static int push_registries(lua_State *L, int idx)
{
    static const char *const names[] = {"_modules", "_parameters", "_buffers"};
    int n = 0;
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        lua_pushstring(L, names[i]);
        if (lua_rawget(L, idx) == LUA_TTABLE) {
            lua_pushliteral(L, "value");
            if (lua_rawget(L, -2) == LUA_TTABLE) {
                lua_remove(L, -2);
                n++;
                continue;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return n;
}

/* Pushes the tables where the names of the value at idx live: the value itself when a table (and a
 * module's registries), then along its metatables' __index chain: an __index table and whatever
 * that table's own metatable leads to (a class, then its parents; string methods); where __index
 * is a function, the metatable itself (a class whose __index function falls back to it, as
 * nn.Module's does) with its __methods and __properties tables (cunet tensors), then the
 * metatable's own metatable (the parent classes). Returns how many were pushed. */
static int push_scopes(lua_State *L, int idx)
{
    static const char *const served[] = {"__methods", "__properties"};
    int n = 0;
    int depth;
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_pushvalue(L, idx);
        n += 1 + push_registries(L, idx);
    }
    if (!lua_getmetatable(L, idx))
        return n;
    for (depth = 0; depth < 32; depth++) {  /* the current metatable is on top */
        int kind;
        lua_pushliteral(L, "__index");
        kind = lua_rawget(L, -2);
        if (kind == LUA_TTABLE) {
            lua_insert(L, -2);  /* index, mt */
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_insert(L, -2);  /* index (a scope), index */
            n++;
        } else if (kind == LUA_TFUNCTION) {
            size_t i;
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_insert(L, -2);  /* mt (a scope), mt */
            n++;
            for (i = 0; i < sizeof served / sizeof served[0]; i++) {
                lua_pushstring(L, served[i]);
                if (lua_rawget(L, -2) == LUA_TTABLE) {
                    lua_insert(L, -2);
                    n++;
                } else {
                    lua_pop(L, 1);
                }
            }
        } else {
            lua_pop(L, 2);
            return n;
        }
        if (!lua_getmetatable(L, -1)) {
            lua_pop(L, 1);
            return n;
        }
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return n;
}

/* completions(text): a table of the names that complete text, a global or a dotted/colon path
 * such as `nn.Lin` or `x:resh`, resolved with raw lookups only so that no Lua code runs. */
static int completions(lua_State *L)
{
    const char *text = luaL_checkstring(L, 1);
    const char *sep;
    const char *last = NULL;
    const char *p;
    int result;
    int nscopes;
    int i;

    lua_newtable(L);
    result = lua_gettop(L);
    lua_newtable(L);  /* the names already offered */
    lua_pushglobaltable(L);  /* the value being walked */
    for (p = text; (sep = strpbrk(p, ".:")) != NULL; p = sep + 1) {
        int found = 0;
        int k;
        int n = push_scopes(L, -1);
        last = sep;
        for (k = n - 1; k >= 0 && !found; k--) {  /* nearest scope first */
            lua_pushlstring(L, p, (size_t)(sep - p));
            lua_rawget(L, -2 - k);
            found = !lua_isnil(L, -1);
            if (!found)
                lua_pop(L, 1);
        }
        if (!found) {
            lua_settop(L, result);
            return 1;
        }
        lua_replace(L, -2 - n);
        lua_pop(L, n);
    }
    nscopes = push_scopes(L, -1);
    for (i = nscopes - 1; i >= 0; i--)  /* nearest scope first */
        add_matches(L, result, result + 1, lua_gettop(L) - i, text, last ? (size_t)(last - text + 1) : 0, p);
    lua_settop(L, result);
    return 1;
}

static lua_State *completion_L;

/* readline generator: state 0 computes the matches, later calls hand them out one by one. */
static char *completion_next(const char *text, int state)
{
    static lua_Integer index, count;
    lua_State *L = completion_L;
    const char *s;
    char *copy;

    if (state == 0) {
        lua_settop(L, 0);  /* this runs inside the REPL loop: the stack holds nothing of ours */
        lua_pushcfunction(L, completions);
        lua_pushstring(L, text);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            lua_pop(L, 1);
            return NULL;
        }
        index = 0;
        count = (lua_Integer)lua_rawlen(L, -1);
    } else if (lua_gettop(L) == 0 || lua_type(L, -1) != LUA_TTABLE) {
        return NULL;
    }
    if (index >= count) {
        lua_settop(L, 0);
        return NULL;
    }
    lua_rawgeti(L, -1, ++index);
    s = lua_tostring(L, -1);
    copy = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return copy;
}

static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;  /* no file names when nothing matches */
    rl_completion_append_character = '\0';  /* readline resets it before each attempt */
    return rl_completion_matches(text, completion_next);
}

/* ---------------------------------------------------------------- REPL */

/* The read-eval-print loop, until end of input. Leaves the stack as it found it. */
/* The interactive REPL starts with the library at hand, as Torch7's th did: cn = require "cunet". */
static void preload_cn(lua_State *L)
{
    if (lua_getglobal(L, "cn") != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cunet");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, PROGNAME ": could not load cunet: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    lua_setglobal(L, "cn");
    printf("cn = require \"cunet\" is loaded; Ctrl-C interrupts, Ctrl-D exits\n");
    fflush(stdout);
}

static void repl(lua_State *L)
{
    static char word_breaks[] = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
    char hist_buf[PATH_MAX];
    struct repl r;
    int base;

    r.L = L;
    r.tty = isatty(STDIN_FILENO);
    r.hist = NULL;
    if (r.tty) {
        rl_readline_name = PROGNAME;
        rl_attempted_completion_function = complete;
        rl_completer_word_break_characters = word_breaks;
        rl_catch_signals = 0;  /* our handler sees Ctrl-C; readline keeps SIGWINCH */
        using_history();
        r.hist = history_path(hist_buf, sizeof hist_buf);
        if (r.hist)
            read_history(r.hist);
    }
    /* Completion works on a thread of its own, so the REPL's stack is left as it is; the thread
     * stays on the stack below base, which keeps it alive. */
    completion_L = lua_newthread(L);
    base = lua_gettop(L);
    for (;;) {
        int status = read_statement(&r);
        if (status == READ_EOF)
            break;
        if (status == READ_INTERRUPTED) {
            lua_settop(L, base);
            continue;
        }
        interrupted_by_user = 0;
        if (status == LUA_OK)
            status = docall(L, 0, LUA_MULTRET);
        if (interrupted_by_user && r.tty)  /* the terminal echoed ^C where the output stood */
            fputc('\n', stdout);
        if (status == LUA_OK && lua_gettop(L) > base) {
            int n = lua_gettop(L) - base;
            luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
            lua_pushcfunction(L, print_values);
            lua_insert(L, base + 1);
            if (lua_pcall(L, n, 0, 0) != LUA_OK)
                print_message(NULL, lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
        } else {
            report(L, status, NULL);
        }
        lua_settop(L, base);
    }
    completion_L = NULL;
    lua_settop(L, base - 1);
    fflush(stdout);
    if (r.hist)
        history_truncate_file(r.hist, HISTORY_MAX);
}

/* ---------------------------------------------------------------- main */

struct args {
    int argc;
    char **argv;
    int script;
    int flags;
};

/* CUNET_PROFILE=1 (any value but "" and "0"): require("cunet.profile")[fn]() around the script,
 * which prints the per-op table on stderr at the end. Errors here are reported, not fatal. */
static void profile_hook(lua_State *L, const char *fn)
{
    const char *env = getenv("CUNET_PROFILE");
    if (!env || !*env || strcmp(env, "0") == 0)
        return;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cunet.profile");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        lua_getfield(L, -1, fn);
        lua_remove(L, -2);
        if (lua_pcall(L, 0, 0, 0) == LUA_OK)
            return;
    }
    print_message(PROGNAME, lua_pushfstring(L, "CUNET_PROFILE: %s", lua_tostring(L, -1)));
    lua_pop(L, 2);
}

/* Everything that touches Lua, run in protected mode. Pushes true when all went well. */
static int pmain(lua_State *L)
{
    struct args *a = lua_touserdata(L, 1);
    int ok = 1;

    lua_settop(L, 0);
    luaL_checkversion(L);
    if (a->flags & HAS_NOENV) {  /* package reads this to ignore LUA_PATH and LUA_CPATH */
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    setup_cunet(L);
    create_arg_table(L, a->argc, a->argv, a->script);
    if (a->flags & HAS_V)
        print_version();
    if (!(a->flags & HAS_NOENV) && run_lua_init(L) != LUA_OK)
        ok = 0;
    if (ok && !run_options(L, a->argv, a->script))
        ok = 0;
    if (ok && a->script < a->argc) {
        profile_hook(L, "start");
        if (run_script(L, a->argc, a->argv, a->script) != LUA_OK)
            ok = 0;
        profile_hook(L, "finish");
    }
    if (ok && (a->flags & HAS_I)) {
        repl(L);
    } else if (ok && a->script == a->argc && !(a->flags & (HAS_E | HAS_V))) {
        if (isatty(STDIN_FILENO)) {
            print_version();
            preload_cn(L);
            repl(L);
        } else if (dofile(L, NULL) != LUA_OK) {
            ok = 0;
        }
    }
    lua_pushboolean(L, ok);
    return 1;
}

/* OpenMP threads that spin while waiting steal the cores from OpenBLAS's own threads (and from
 * everything else on a busy machine): measured here, a training step went from 47 ms to 4.4 s
 * under load. libgomp reads OMP_WAIT_POLICY when it is loaded, before main, so when the user
 * has not chosen a policy we set "passive" and start again with it. */
static void ensure_passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("CUNET_NO_REEXEC"))
        return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    setenv("CUNET_NO_REEXEC", "1", 1); /* never loop, even if the policy gets unset */
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the default policy */
}

int main(int argc, char **argv)
{
    struct args a;
    lua_State *L;
    int bad = 0;
    int status;
    int ok;

    ensure_passive_openmp(argv);
    a.argc = argc;
    a.argv = argv;
    a.script = argc;
    a.flags = argc > 0 ? scan_options(argc, argv, &a.script, &bad) : 0;
    if (a.flags == HAS_ERROR) {
        const char *opt = argv[bad];
        if ((opt[1] == 'e' || opt[1] == 'l') && opt[2] == '\0')
            fprintf(stderr, PROGNAME ": '%s' needs argument\n", opt);
        else
            fprintf(stderr, PROGNAME ": unrecognized option '%s'\n", opt);
        fputs(usage_text, stderr);
        return EXIT_FAILURE;
    }
    if (a.flags & HAS_HELP) {
        fputs(usage_text, stdout);
        return EXIT_SUCCESS;
    }
    L = luaL_newstate();
    if (L == NULL) {
        print_message(PROGNAME, "cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, &a);
    status = lua_pcall(L, 1, 1, 0);
    ok = lua_toboolean(L, -1);
    report(L, status, PROGNAME);
    lua_close(L);
    return status == LUA_OK && ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
