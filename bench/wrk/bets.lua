-- wrk script: POST /v1/bets, a fresh transaction id on every request (Croupier bet body).
--
-- Arguments after `--`: TOKEN_FILE RUN_PREFIX PLAYERS GAME_IDS [AMOUNT_MINOR] [BETS_PER_ROUND]
--   TOKEN_FILE  file holding the bearer token (kept off the command line)
--   RUN_PREFIX  makes ids unique across runs against the same ledger ("warm", "run", ...)
--   PLAYERS     players are "bench-p<i>" for i in 0..PLAYERS-1, picked at random per bet
--   GAME_IDS    comma-separated; a round keeps one game, rounds cycle through them
-- Ids are RUN_PREFIX-<thread id>-<counter>; each player's bets of one thread are grouped in
-- rounds of BETS_PER_ROUND bets, so rounds stay small as in real play.

local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "report.lua")

local prefix, players, games, amount_minor, bets_per_round
local counter = 0
local bets_by_player = {}

function init(args)
  local f = assert(io.open(args[1], "r"), "cannot read the token file")
  local token = string.gsub(f:read("*a"), "%s+", "")
  f:close()
  prefix = args[2]
  players = assert(tonumber(args[3]), "PLAYERS must be a number")
  games = {}
  for game in string.gmatch(args[4], "[^,]+") do
    table.insert(games, game)
  end
  amount_minor = tonumber(args[5] or "100")
  bets_per_round = tonumber(args[6] or "5")
  math.randomseed(os.time() * 1000 + thread_id)
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local player = math.random(0, players - 1)
  local n = bets_by_player[player] or 0
  bets_by_player[player] = n + 1
  local round = math.floor(n / bets_per_round)
  local body = string.format(
    '{"id":"%s-%d-%d","player_id":"bench-p%d","currency":"EUR","amount_minor":%d,'
      .. '"round_id":"%s-%d-p%d-r%d","game_id":"%s"}',
    prefix, thread_id, counter, player, amount_minor,
    prefix, thread_id, player, round, games[(player + round) % #games + 1])
  return wrk.format("POST", "/v1/bets", nil, body)
end
