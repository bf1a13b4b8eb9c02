-- test_cli.lua — the cunet executable (cli/main.c) driven from outside through the shell:
-- options, the `arg` table, exit statuses, stdin, the library path, and the REPL on a pseudo-terminal
-- (util-linux `script`). CUNET_EXE names the executable; ./cunet by default.
local lu = require "luaunit"
local helpers = require "helpers"
local read_file, write_file = helpers.read_file, helpers.write_file

local shell_quote = helpers.shell_quote

local function absolute(path)
    if path:sub(1, 1) == "/" then
        return path
    end
    local pipe = assert(io.popen("pwd"))
    local cwd = pipe:read("l")
    pipe:close()
    return cwd .. "/" .. path:gsub("^%./", "")
end

local EXE = absolute(os.getenv("CUNET_EXE") or "./cunet")
local CUNET = shell_quote(EXE)

-- Runs a shell command; returns its stdout, its stderr and its exit status.
local function run(command)
    local err_path = os.tmpname()
    local pipe = assert(io.popen("(" .. command .. ") 2>" .. err_path))
    local out = pipe:read("a")
    local _, _, code = pipe:close()
    local err = read_file(err_path, "")
    os.remove(err_path)
    return out, err, code
end

local function assert_exe()
    local f = io.open(EXE, "rb")
    lu.assertNotNil(f, "no executable at " .. EXE .. " (run make, or set CUNET_EXE)")
    f:close()
end

-- A script file holding code, removed by the caller.
local function temp_script(code)
    local path = os.tmpname()
    write_file(path, code)
    return path
end

TestCli = {}

function TestCli:setUp()
    assert_exe()
end

function TestCli:testExecuteString()
    local out, err, code = run(CUNET .. " -e 'print(6 * 7)'")
    lu.assertEquals(out, "42\n")
    lu.assertEquals(err, "")
    lu.assertEquals(code, 0)
end

function TestCli:testExecuteStringRepeatedInOrder()
    local out, _, code = run(CUNET .. " -e 'x = 6' -e 'print(x * 7)' -e'print(x)'")
    lu.assertEquals(out, "42\n6\n")
    lu.assertEquals(code, 0)
end

function TestCli:testScriptSeesArgTableAndVarargs()
    local script = temp_script([[
print(arg[0], #arg, arg[1], arg[2])
print(select("#", ...), ...)
print(arg[-1], arg[-2], arg[-3] ~= nil, arg[-4])
]])
    local out, err, code = run(CUNET .. " -e 'y = 1' " .. script .. " one 'two words'")
    os.remove(script)
    lu.assertEquals(err, "")
    lu.assertEquals(code, 0)
    lu.assertEquals(out, script .. "\t2\tone\ttwo words\n"
        .. "2\tone\ttwo words\n"
        .. "y = 1\t-e\ttrue\tnil\n")
end

function TestCli:testArgTableWithoutScript()
    -- As lua5.4: no script, so arg[0] is the interpreter and the options are arg[1..].
    local out = run(CUNET .. " -e 'print(arg[0], arg[1], arg[2] ~= nil, arg[3])'")
    lu.assertEquals(out, EXE .. "\t-e\ttrue\tnil\n")
end

function TestCli:testScriptReturnsStatusZero()
    local script = temp_script("local n = 0 for i = 1, 10 do n = n + i end print(n)\n")
    local out, _, code = run(CUNET .. " " .. script)
    os.remove(script)
    lu.assertEquals(out, "55\n")
    lu.assertEquals(code, 0)
end

function TestCli:testFailingScriptExitsNonZeroWithTraceback()
    local script = temp_script("local function f() error('boom from script') end\nf()\n")
    local out, err, code = run(CUNET .. " " .. script)
    os.remove(script)
    lu.assertEquals(out, "")
    lu.assertEquals(code, 1)
    lu.assertStrContains(err, "boom from script")
    lu.assertStrContains(err, "stack traceback:")
    lu.assertStrContains(err, ":1: in ")  -- the frame of f
end

function TestCli:testFailingExecuteStringExitsNonZero()
    local _, err, code = run(CUNET .. " -e 'error(\"bad -e\")' -e 'print(\"not reached\")'")
    lu.assertEquals(code, 1)
    lu.assertStrContains(err, "bad -e")
end

function TestCli:testMissingScript()
    local _, err, code = run(CUNET .. " /nonexistent/nothing.lua")
    lu.assertEquals(code, 1)
    lu.assertStrContains(err, "cannot open /nonexistent/nothing.lua")
end

function TestCli:testStdinRunsAsOneChunk()
    local out, err, code = run("printf 'x = 2\\nprint(x * 21)\\n' | " .. CUNET)
    lu.assertEquals(out, "42\n")
    lu.assertEquals(err, "")
    lu.assertEquals(code, 0)
end

function TestCli:testStdinErrorExitsNonZero()
    local _, err, code = run("printf 'local a = 1\\nerror(\"from stdin\")\\n' | " .. CUNET)
    lu.assertEquals(code, 1)
    lu.assertStrContains(err, "stdin:2: from stdin")
end

function TestCli:testDashReadsStdinWithArgs()
    local out, _, code = run("printf 'print(arg[0], ...)' | " .. CUNET .. " - a b")
    lu.assertEquals(out, "-\ta\tb\n")
    lu.assertEquals(code, 0)
end

function TestCli:testInteractiveAfterScriptWithoutTerminal()
    -- -i runs the script, then the REPL; on a pipe it prompts and reads plain lines.
    local script = temp_script("x = 2\n")
    local out, _, code = run("printf 'x * 21\\nfor i = 1, 2 do\\nprint(i * 10)\\nend\\n' | " .. CUNET .. " -i " .. script)
    os.remove(script)
    lu.assertEquals(code, 0)
    lu.assertStrContains(out, "> 42\n")
    lu.assertStrContains(out, ">> >> 10\n20\n")
end

function TestCli:testVersion()
    local out, _, code = run(CUNET .. " --version")
    lu.assertEquals(code, 0)
    lu.assertStrMatches(out, "cunet %d+%.%d+%.%d+ %(Lua 5%.4%.%d+%)\n")
    lu.assertEquals(run(CUNET .. " -v"), out)
end

function TestCli:testHelp()
    local out, err, code = run(CUNET .. " --help")
    lu.assertEquals(code, 0)
    lu.assertEquals(err, "")
    lu.assertStrContains(out, "usage: cunet [options] [script [args]]")
    lu.assertStrContains(out, "-e stat")
end

function TestCli:testUnknownOptionPrintsUsageAndFails()
    local out, err, code = run(CUNET .. " -Z")
    lu.assertEquals(code, 1)
    lu.assertEquals(out, "")
    lu.assertStrContains(err, "unrecognized option '-Z'")
    lu.assertStrContains(err, "usage: cunet")
end

function TestCli:testOptionWithoutArgument()
    local _, err, code = run(CUNET .. " -e")
    lu.assertEquals(code, 1)
    lu.assertStrContains(err, "'-e' needs argument")
end

function TestCli:testRequireLibraryFromAnotherDirectory()
    local out, err, code = run("cd / && " .. CUNET .. " -e '"
        .. "local cunet = require \"cunet\" "
        .. "print(type(cunet)) "
        .. "print(CUNET_LUADIR) "
        .. "print(package.searchpath(\"cunet\", package.path))'")
    lu.assertEquals(err, "")
    lu.assertEquals(code, 0)
    local kind, dir, found = out:match("^(%S+)\n(%S+)\n(%S+)\n$")
    lu.assertEquals(kind, "table")
    lu.assertEquals(found, dir .. "/cunet/init.lua")
    lu.assertTrue(require("cunet.fs").exists(found), "CUNET_LUADIR has no cunet/init.lua")
end

function TestCli:testCoreModuleIsPreloaded()
    local out = run(CUNET .. " -e 'print(type(package.preload[\"cunet.core\"]))'")
    lu.assertEquals(out, "function\n")
end

function TestCli:testLuaPathIsRespectedAfterLibraryDir()
    local out = run("env -u LUA_PATH_5_4 LUA_PATH='/nonexistent/?.lua' " .. CUNET
        .. " -e 'print(package.path == CUNET_LUADIR .. \"/?.lua;\" .. CUNET_LUADIR .. \"/?/init.lua;/nonexistent/?.lua\")'")
    lu.assertEquals(out, "true\n")
    out = run("env LUA_PATH_5_4='/first/?.lua' LUA_PATH='/second/?.lua' " .. CUNET .. " -e 'print(package.path:match(\"/%a+/%?%.lua$\"))'")
    lu.assertEquals(out, "/first/?.lua\n")
end

function TestCli:testLoadLibraryIntoGlobal()
    local out = run(CUNET .. " -l s=string -e 'print(s.rep(\"ab\", 3))'")
    lu.assertEquals(out, "ababab\n")
end

-- The REPL on a terminal. `script` gives cunet a pseudo-terminal whose input is our pipe; the
-- terminal echoes that input, so each check looks for output that the input itself does not contain.
TestRepl = {}

local function have_script()
    return os.execute("command -v script >/dev/null 2>&1") == true
end

-- Feeds steps to an interactive cunet: a string is typed, a number waits that many seconds.
-- Returns the output with terminal escapes and carriage returns removed, and the exit status.
local function repl_session(steps, history)
    -- Lines typed while the REPL is still evaluating the previous one are echoed by the terminal
    -- itself (readline is not reading then), between that line's echo and its value: CI saw
    -- "> a = 6 * 7; a\nx, y = ...\n42". A pause between lines makes that rare, and the tests assert
    -- a line's echo and its value separately, so such an echo between them does not fail one.
    local feed, typed = {}, false
    for _, step in ipairs(steps) do
        if type(step) == "number" then
            feed[#feed + 1] = "sleep " .. step
            typed = false
        else
            if typed then
                feed[#feed + 1] = "sleep 0.1"
            end
            feed[#feed + 1] = "printf '%s' " .. shell_quote(step)
            typed = true
        end
    end
    -- `exec`: script runs the command through $SHELL -c, and a shell (dash, as CI's /bin/sh) that
    -- waited for cunet would itself die of the Ctrl-C and report 130.
    local command = "(sleep 0.3; " .. table.concat(feed, "; ") .. ") | env CUNET_HISTORY="
        .. shell_quote(history) .. " script -qec " .. shell_quote("exec " .. CUNET) .. " /dev/null"
    local out, _, code = run(command)
    out = out:gsub("\27%[[%d;?]*%a", ""):gsub("\r", "")
    return out, code
end

function TestRepl:setUp()
    assert_exe()
    if not have_script() then
        lu.skip("no `script` (util-linux) to give the REPL a pseudo-terminal")
    end
    self.history = helpers.temp_path()
end

function TestRepl:tearDown()
    if self.history then
        os.remove(self.history)
    end
end

function TestRepl:testExpressionsStatementsAndErrors()
    local out, code = repl_session({
        "x = 2\n", "x * 21\n", "_ + 1\n",
        "1, 'two', nil\n",
        "for i = 1, 3 do\n", "print('i=' .. i)\n", "end\n",
        "error('oo' .. 'ps')\n",
        "print('still ' .. 'alive')\n",
        "math.sq\t(16)\n",
    }, self.history)
    lu.assertEquals(code, 0)
    lu.assertStrContains(out, "cunet ")                     -- the banner
    lu.assertStrContains(out, "\n42\n")                     -- an expression prints its value
    lu.assertStrContains(out, "\n43\n")                     -- `_` holds the last value
    lu.assertStrContains(out, "\n1\ttwo\tnil\n")            -- several values, tab-separated
    lu.assertStrContains(out, ">> ")                        -- the continuation prompt
    lu.assertStrContains(out, "\ni=1\ni=2\ni=3\n")          -- the for loop ran once, whole
    lu.assertStrContains(out, "stdin:1: oops\nstack traceback:")
    lu.assertStrContains(out, "\nstill alive\n")            -- the session survived the error
    lu.assertStrContains(out, "math.sqrt(16)\n")            -- Tab completed the name
    lu.assertStrContains(out, "\n4.0\n")                    -- and the call ran
end

function TestRepl:testCtrlCStopsComputationAndKeepsSession()
    local out, code = repl_session({
        "while true do end\n", 0.8, "\3", 0.3,
        "print('after ' .. 'interrupt')\n",
    }, self.history)
    lu.assertEquals(code, 0)
    lu.assertStrContains(out, "interrupted!")
    lu.assertStrContains(out, "\nafter interrupt\n")
end

function TestRepl:testCtrlCAtPromptDropsTheLine()
    local out = repl_session({
        "print('dropped' .. ' line')", 0.3, "\3", 0.3,
        "for i = 1, 2 do\n", 0.3, "\3", 0.3,     -- also abandons a statement halfway
        "print('fresh ' .. 'prompt')\n",
    }, self.history)
    lu.assertNotStrContains(out, "dropped line")
    lu.assertStrContains(out, "\nfresh prompt\n")
end

function TestRepl:testHistoryPersistsAcrossSessions()
    repl_session({"print('hist' .. 'ory ok')\n"}, self.history)
    lu.assertStrContains(read_file(self.history, ""), "print('hist' .. 'ory ok')")
    local out = repl_session({"\27[A\n"}, self.history)     -- Up, Enter: the last session's line
    lu.assertStrContains(out, "\nhistory ok\n")
end

function TestRepl:testUnwritableHistoryIsNoError()
    local out, code = repl_session({"6 * 7\n"}, "/nonexistent/dir/history")
    lu.assertEquals(code, 0)
    lu.assertStrContains(out, "\n42\n")
    lu.assertNotStrContains(out, "nonexistent")
end

function TestRepl:testPrettyPrintsTables()
    local out, code = repl_session({
        "cn.zeros{2, 3}:shape()\n",                    -- a shape, not table: 0x...
        "{peak = 2 * 1024, live = 1024}\n",           -- a stats table, keys sorted
        "{a = {b = {c = {d = 1}}}, s = 'q' .. 'uoted'}\n",  -- nested: cut at depth 3; strings quoted
        "t = {1}; t.self = t; t\n",                     -- a table inside itself
        "cn.ones{2}\n",                                 -- tensors as print shows them
    }, self.history)
    lu.assertEquals(code, 0)
    lu.assertStrContains(out, "\n{2, 3}\n")
    lu.assertStrContains(out, "\n{live = 1024, peak = 2048}\n")
    lu.assertStrContains(out, '\n{a = {b = {c = {…}}}, s = "quoted"}\n')
    lu.assertStrContains(out, "\n{1, self = <cycle>}\n")
    lu.assertStrContains(out, "\ntensor([1., 1.], shape=[2])\n")
    lu.assertNotStrContains(out, "table: 0x")
end

function TestRepl:testTabCompletesMethodsThroughIndexChains()
    local out, code = repl_session({
        "m = cn.nn.Linear(2, 3)\n",
        "m:num_par\t()\n", 0.2,                         -- nn.Module's method, two classes up
        "s = cn.nn.Sequential{{'proj', m}}\n",
        "s.pr\t.out_features * 10\n", 0.2,              -- a child, from the module's registry
        "m:\t\t", 0.3, "\21",                           -- list every name, then drop the line
        "print('after ' .. 'listing')\n",
    }, self.history)
    lu.assertEquals(code, 0)
    lu.assertStrContains(out, "m:num_parameters()\n")
    lu.assertStrContains(out, "\n9\n")
    lu.assertStrContains(out, "s.proj.out_features * 10\n")
    lu.assertStrContains(out, "\n30\n")
    lu.assertStrContains(out, "m:forward")
    lu.assertStrContains(out, "m:zero_grad")
    lu.assertNotStrContains(out, "m:_buffers")      -- private names only when `_` is typed
    lu.assertNotStrContains(out, "m:__index")
    lu.assertStrContains(out, "\nafter listing\n")
end

function TestRepl:testStatementThenExpressionOnOneLine()
    local out, code = repl_session({
        "a = 6 * 7; a\n",
        "x, y = 1, 2; x + y * 100\n",
        "m = cn.nn.Linear(2, 3); m.weight:shape()\n",   -- a call shows its value, as on its own line
        "s = 'a;' .. 'b'; s -- c; d\n",                  -- `;` in strings and comments do not split
        "for i = 1, 3 do z = i; print('it ' .. i) end\n",  -- nor one inside a block
        "print('next ' .. 'line')\n",
    }, self.history)
    lu.assertEquals(code, 0)
    lu.assertStrContains(out, "a = 6 * 7; a\n")
    lu.assertStrContains(out, "\n42\n")
    lu.assertStrContains(out, "\n201\n")
    lu.assertStrContains(out, "\n{3, 2}\n")
    lu.assertStrContains(out, "\na;b\n")
    lu.assertStrContains(out, "\nit 1\nit 2\nit 3\n")
    lu.assertStrContains(out, "\nnext line\n")
    lu.assertNotStrContains(out, ">> ")             -- no continuation line swallowed the next one
end

-- cunet.repl.pretty, the REPL's printer, on its own.
TestReplPretty = {}

function TestReplPretty:testForms()
    local repl = require "cunet.repl"
    local pretty = repl.pretty
    lu.assertEquals(pretty({2, 3}), "{2, 3}")
    lu.assertEquals(pretty({}), "{}")
    lu.assertEquals(pretty({"a\n", true, 1.5, [10] = 2, ["not id"] = 1, ["end"] = 2}),
        '{"a\\n", true, 1.5, [10] = 2, ["end"] = 2, ["not id"] = 1}')
    lu.assertEquals(pretty({a = {b = {c = {d = 1}}}}), "{a = {b = {c = {…}}}}")
    lu.assertEquals(pretty("top level"), "top level")
    lu.assertEquals(pretty(nil), "nil")
    local cn = require "cunet"
    lu.assertEquals(pretty({x = cn.zeros{2, 3}}), "{x = tensor(shape=[2, 3])}")
    lu.assertEquals(pretty(cn.zeros{2}), tostring(cn.zeros{2}))
end

function TestReplPretty:testLongTablesWrapAndCut()
    local repl = require "cunet.repl"
    local list = {}
    for i = 1, 60 do list[i] = i end
    local lines = {}
    for l in repl.pretty(list):gmatch("[^\n]+") do lines[#lines + 1] = l end
    lu.assertEquals(lines[1], "{")
    lu.assertEquals(lines[#lines], "}")
    lu.assertEquals(lines[#lines - 1], "  … (10 more)")
    for _, l in ipairs(lines) do lu.assertTrue(#l <= repl.settings.width, l) end
    lu.assertStrContains(repl.pretty({list, list, list}), "{… (60 more)}")  -- 100 entries in all
    local saved = repl.settings.depth
    repl.settings.depth = 1
    lu.assertEquals(repl.pretty({a = {1}}), "{a = {…}}")
    repl.settings.depth = saved
end
