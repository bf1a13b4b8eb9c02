-- test_docs.lua — the documentation runs as written: every fenced code block of README.md and
-- docs/*.md that is meant to run is extracted and run, and prints what the doc says it prints.
-- The convention (docs/contributing.md, "Docs that run"):
--
--   ```lua                 a program: written to a file, run as `./cunet FILE` from the repository
--                          root in a fresh process; it must succeed
--   ```sh                  commands: run by `sh -e` from the repository root, `./cunet` being the
--                          executable under test (CUNET_EXE)
--   ```lua no-run: reason  (or sh) not run; the reason is required; an sh one's `./cunet recipes|tools|
--                          examples/<x>.lua` commands must name a script that exists and its options
--   ```output              the expected standard output of the lua/sh block just before it
--   ```text, ```python...  anything else: shown, not run
--   print(x)  --> 42       in a lua block: what the print calls of that line write
--
-- In expected output, `…` matches any text within a line and a line holding only `…` matches any
-- number of lines. Indented code blocks and fences without a language are errors, and so is a
-- command written `cunet …` where a checkout has `./cunet`.
local lu = require "luaunit"
local helpers = require "helpers"
local read_file, write_file = helpers.read_file, helpers.write_file

local shell_quote = helpers.shell_quote

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local pipe = assert(io.popen("pwd"))
  local cwd = pipe:read("l")
  pipe:close()
  return cwd .. "/" .. path:gsub("^%./", "")
end

local EXE = absolute(os.getenv("CUNET_EXE") or "./cunet")

-- Files whose blocks are not run yet, and why. A file here is still linted once it is fenced.
local SKIP = {
}

-- The code blocks of a Markdown file: {kind, info, line, lines}, plus lint problems.
-- kind: "lua"/"sh" (run), "no-run", "output", "other".
local function parse_blocks(path)
  local lines = {}
  for l in io.lines(path) do lines[#lines + 1] = l end
  local blocks, problems = {}, {}
  local i, prev_blank, in_list = 1, true, false
  while i <= #lines do
    local l = lines[i]
    local indent, fence, info = l:match("^(%s*)(```+)%s*(.-)%s*$")
    if fence then
      local start, body = i, {}
      i = i + 1
      while i <= #lines and not lines[i]:match("^%s*" .. fence .. "%s*$") do
        body[#body + 1] = lines[i]:sub(#indent + 1)
        i = i + 1
      end
      local lang, rest = info:match("^(%S*)%s*(.*)$")
      local kind
      if lang == "" then
        problems[#problems + 1] = string.format("%s:%d: a fence without a language (```lua, ```sh, ```output, ```text)", path, start)
        kind = "other"
      elseif (lang == "lua" or lang == "sh") and rest:match("^no%-run") then
        kind = "no-run"
        if not rest:match("^no%-run:?%s*%S") then
          problems[#problems + 1] = string.format("%s:%d: `no-run` needs a reason (```%s no-run: why)", path, start, lang)
        end
      elseif lang == "lua" or lang == "sh" then
        kind = lang
      elseif lang == "output" then
        kind = "output"
      else
        kind = "other"
      end
      blocks[#blocks + 1] = {kind = kind, lang = lang, line = start, lines = body}
      i = i + 1
      prev_blank = false
    elseif prev_blank and not in_list and l:match("^    %s*%S") then
      problems[#problems + 1] = string.format("%s:%d: an indented code block: fence it (```lua, ```sh, ```text, ...)", path, i)
      while i <= #lines and (lines[i]:match("^    ") or lines[i]:match("^%s*$")) do i = i + 1 end
      prev_blank = true
    else
      if l:match("^%s*$") then
        prev_blank = true
      else
        -- an indented line right after a list item continues the item, not a code block
        in_list = l:match("^%s*[-*+] ") ~= nil or l:match("^%s*%d+%. ") ~= nil or (in_list and l:match("^%s") ~= nil)
        prev_blank = false
      end
      i = i + 1
    end
  end
  return blocks, problems
end

-- `cunet ...` written as a command: in code blocks and in inline code.
local function lint_commands(path, blocks)
  local problems = {}
  local n = 0
  for l in io.lines(path) do
    n = n + 1
    for span in l:gmatch("`([^`]+)`") do
      if span:match("^cunet [%-%w]") then
        problems[#problems + 1] = string.format("%s:%d: `%s`: write ./cunet (what a checkout has)", path, n, span)
      end
    end
  end
  for _, b in ipairs(blocks) do
    if b.lang == "sh" then
      for k, l in ipairs(b.lines) do
        if l:match("^%s*cunet%s") or l:match("|%s*cunet%s") or l:match("^%s*mpirun.-%scunet%s") then
          problems[#problems + 1] = string.format("%s:%d: `cunet` in a command: write ./cunet", path, b.line + k)
        end
      end
    end
  end
  return problems
end

-- The options a script's --help lists, as a set of "--name" (and "--no-name", which cunet.cli accepts for
-- a flag); nil for a script that does not parse its command line with cunet.cli (--help could run it).
local help_cache = {}
local function script_options(script)
  if help_cache[script] == nil then
    local source = read_file(script, "")
    local options = false
    if source:find("cunet.cli", 1, true) or source:find("cunet.train_recipe", 1, true) then
      local p = assert(io.popen(shell_quote(EXE) .. " " .. shell_quote(script) .. " --help 2>&1"))
      local text = p:read("a")
      p:close()
      options = {}
      for name in text:gmatch("\n%s+%-%-([%w%-]+)") do
        options["--" .. name], options["--no-" .. name] = true, true
      end
    end
    help_cache[script] = options
  end
  return help_cache[script] or nil
end

-- The commands that are not run (```sh no-run): each `./cunet recipes|tools|examples/<x>.lua` names a
-- script that exists and passes only options its --help lists, so a renamed script or option fails
-- here rather than in a reader's hands. Lines ending in a backslash continue.
local function lint_script_options(path, blocks)
  local problems = {}
  for _, b in ipairs(blocks) do
    if b.kind == "no-run" and b.lang == "sh" then
      local k = 1
      while k <= #b.lines do
        local first, line = k, b.lines[k]
        while line:match("\\%s*$") and k < #b.lines do
          k = k + 1
          line = line:gsub("\\%s*$", " ") .. b.lines[k]
        end
        line = line:gsub("#.*$", "")
        for script, dir, rest in line:gmatch("%./cunet%s+(([%a_]+)/[%w_%-/]+%.lua)([^|;&>]*)") do
          if dir == "recipes" or dir == "tools" or dir == "examples" then
            local where = string.format("%s:%d", path, b.line + first)
            if not read_file(script, false) then
              problems[#problems + 1] = string.format("%s: no script %s", where, script)
            else
              local options = script_options(script)
              for option in (" " .. rest):gmatch("%s(%-%-[%w%-]+)") do
                if options and not options[option] then
                  problems[#problems + 1] = string.format("%s: %s has no option %s (its --help)", where, script, option)
                end
              end
            end
          end
        end
        k = k + 1
      end
    end
  end
  return problems
end

-- Does text match the expected line, where `…` stands for any text?
local function line_matches(expected, text)
  local pattern = "^" .. expected:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("…", ".-") .. "$"
  return text:match(pattern) ~= nil
end

-- Matches expected lines against actual lines; a lone `…` line matches any number of lines.
local function lines_match(expected, actual, ei, ai)
  ei, ai = ei or 1, ai or 1
  if ei > #expected then return ai > #actual end
  if expected[ei] == "…" then
    for k = ai, #actual + 1 do
      if lines_match(expected, actual, ei + 1, k) then return true end
    end
    return false
  end
  return ai <= #actual and line_matches(expected[ei], actual[ai]) and lines_match(expected, actual, ei + 1, ai + 1)
end

local function split_lines(s)
  local out = {}
  for l in (s .. "\n"):gmatch("(.-)\n") do out[#out + 1] = l:gsub("%s+$", "") end
  while #out > 0 and out[#out] == "" do out[#out] = nil end
  return out
end

local function squash(s) return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")) end

-- A print that marks which line of the block called it: "\1<line>\2" before its output.
local PRELUDE = [[
local raw_print, source = print, "@" .. os.getenv("CUNET_DOC_BLOCK")
print = function(...)
  local info = debug.getinfo(2, "Sl")
  if info and info.source == source then io.write("\1", info.currentline, "\2") end
  return raw_print(...)
end]]

-- Runs a block; returns stdout (markers removed), per-line print output, stderr and success.
local function run_block(block)
  local path = os.tmpname()
  local command
  if block.kind == "lua" then
    write_file(path, table.concat(block.lines, "\n") .. "\n")
    command = "CUNET_DOC_BLOCK=" .. shell_quote(path) .. " " .. shell_quote(EXE) .. " -e " .. shell_quote(PRELUDE)
      .. " " .. shell_quote(path)
  else
    local text = table.concat(block.lines, "\n"):gsub("%./cunet", function() return shell_quote(EXE) end)
    write_file(path, text .. "\n")
    command = "sh -e " .. shell_quote(path)
  end
  local err_path = os.tmpname()
  local pipe = assert(io.popen("(" .. command .. ") 2>" .. err_path .. " </dev/null"))
  local raw = pipe:read("a")
  local ok = pipe:close()
  local err = read_file(err_path, "")
  os.remove(err_path)
  os.remove(path)
  local by_line, out = {}, {}
  local pos, current = 1, nil
  while true do
    local s, e, n = raw:find("\1(%d+)\2", pos)
    local chunk = raw:sub(pos, (s or #raw + 1) - 1)
    out[#out + 1] = chunk
    if current then by_line[current] = (by_line[current] or "") .. chunk end
    if not s then break end
    current, pos = tonumber(n), e + 1
  end
  return table.concat(out), by_line, err, ok
end

-- Runs the blocks of one file; returns a list of failures.
local function check_file(path)
  local blocks, problems = parse_blocks(path)
  for _, p in ipairs(lint_commands(path, blocks)) do problems[#problems + 1] = p end
  for _, p in ipairs(lint_script_options(path, blocks)) do problems[#problems + 1] = p end
  local ran, skipped = 0, 0
  for k, b in ipairs(blocks) do
    if b.kind == "lua" or b.kind == "sh" then
      ran = ran + 1
      local out, by_line, err, ok = run_block(b)
      local where = string.format("%s:%d (```%s)", path, b.line, b.lang)
      if not ok then
        problems[#problems + 1] = string.format("%s failed:\n%s%s", where, out, err)
      else
        local nxt = blocks[k + 1]
        if nxt and nxt.kind == "output" then
          local expected, actual = {}, split_lines(out)
          for _, l in ipairs(nxt.lines) do expected[#expected + 1] = l:gsub("%s+$", "") end
          while #expected > 0 and expected[#expected] == "" do expected[#expected] = nil end
          if not lines_match(expected, actual) then
            problems[#problems + 1] = string.format("%s prints\n%s\nwhere the doc (line %d) shows\n%s",
              where, table.concat(actual, "\n"), nxt.line, table.concat(expected, "\n"))
          end
        end
        if b.kind == "lua" then
          for n, l in ipairs(b.lines) do
            local want = l:match("%-%->%s*(.-)%s*$")
            if want and not l:match("^%s*%-%-") then
              local got = by_line[n] and squash(by_line[n])
              if got == nil then
                problems[#problems + 1] = string.format("%s:%d: printed nothing, the doc says `%s`", path, b.line + n, want)
              elseif not line_matches(squash(want), got) then
                problems[#problems + 1] = string.format("%s:%d: prints `%s`, the doc says `%s`", path, b.line + n, got, want)
              end
            end
          end
        end
      end
    elseif b.kind == "no-run" then
      skipped = skipped + 1
    end
  end
  return problems, ran, skipped
end

local function doc_files()
  local files = {"README.md"}
  local p = io.popen("ls docs/*.md 2>/dev/null")
  for f in p:lines() do files[#files + 1] = f end
  p:close()
  return files
end

TestDocs = {}

function TestDocs:setUp()
  local f = io.open(EXE, "rb")
  lu.assertNotNil(f, "no executable at " .. EXE .. " (run make, or set CUNET_EXE)")
  f:close()
end

-- One test per file, so a failure names its page.
for _, file in ipairs(doc_files()) do
  TestDocs["test_" .. file:gsub("^docs/", ""):gsub("%W", "_")] = function()
    if SKIP[file] then lu.skip(file .. ": " .. SKIP[file]) end
    local problems = check_file(file)
    if #problems > 0 then lu.fail(table.concat(problems, "\n\n")) end
  end
end

-- The harness itself: output matching and block parsing.
function TestDocs:testWildcards()
  lu.assertTrue(line_matches("table: 0x…", "table: 0x55d0"))
  lu.assertFalse(line_matches("{2, 3}", "{2, 4}"))
  lu.assertTrue(lines_match({"a", "…", "d"}, {"a", "b", "c", "d"}))
  lu.assertTrue(lines_match({"a", "…"}, {"a"}))
  lu.assertFalse(lines_match({"a", "b"}, {"a", "b", "c"}))
end

function TestDocs:testParseAndRun()
  local path = os.tmpname()
  write_file(path, table.concat({
    "# t", "", "```lua", "print(6 * 7)  --> 42", "print('a', 'b')", "```", "", "```output", "42", "a\tb", "```",
    "", "```sh no-run", "x", "```", "", "    indented", "", "```sh", "./cunet -e 'print(1)'", "```",
  }, "\n") .. "\n")
  local problems, ran, skipped = check_file(path)
  os.remove(path)
  lu.assertEquals(ran, 2)
  lu.assertEquals(skipped, 1)
  lu.assertEquals(#problems, 2, table.concat(problems, "\n"))
  lu.assertStrContains(problems[1], "needs a reason")
  lu.assertStrContains(problems[2], "indented code block")
end

-- Commands that are not run still name real scripts and options (the --help of each script).
function TestDocs:testNoRunCommandsAreLinted()
  local path = os.tmpname()
  write_file(path, table.concat({
    "```sh no-run: long", "./cunet recipes/sample.lua --ckpt x.safetensors --steps 5 \\", "  --sampler ddim --stepz 3 --no-ema",
    "./cunet recipes/nope.lua --n 3", "./cunet my_own.lua --anything   # not a repository script", "```",
  }, "\n") .. "\n")
  local problems = check_file(path)
  os.remove(path)
  lu.assertEquals(#problems, 2, table.concat(problems, "\n"))
  lu.assertStrContains(problems[1], ":2: recipes/sample.lua has no option --stepz (its --help)")
  lu.assertStrContains(problems[2], ":4: no script recipes/nope.lua")
end

function TestDocs:testWrongOutputIsReported()
  local path = os.tmpname()
  write_file(path, "```lua\nprint(1 + 1)  --> 3\n```\n\n```output\n3\n```\n")
  local problems = check_file(path)
  os.remove(path)
  lu.assertEquals(#problems, 2)
  lu.assertStrContains(problems[1], "where the doc")
  lu.assertStrContains(problems[2], "prints `2`, the doc says `3`")
end
