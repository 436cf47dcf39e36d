#!/usr/bin/env bash
# The whole lifecycle against a running Quire, with curl and jq:
# schema -> policy and gate -> rail -> documents -> pipeline -> progress -> review ->
# data product -> rerun. Usage: QUIRE_URL=http://127.0.0.1:8080 QUIRE_KEY=tlnc_... examples/quickstart.sh
set -euo pipefail
Q="${QUIRE_URL:-http://127.0.0.1:8080}"
: "${QUIRE_KEY:?set QUIRE_KEY to an API key (printed on first start)}"
H="Authorization: Bearer $QUIRE_KEY"
J="Content-Type: application/json"
api() { curl -sS --fail-with-body -H "$H" -H "$J" "$@"; }
wait_settled() {  # polls progress until the run is no longer active
  for _ in $(seq 1 300); do
    [ "$(api "$Q/v1/pipelines/$1/progress" | jq -r .status)" != active ] && return 0
    sleep 0.1
  done
  echo "run $1 did not settle" >&2; return 1
}

echo "== 1. schema"
SCHEMA=$(api "$Q/v1/schemas" -d '{"name": "Invoices", "fields": [
  {"field_name": "invoice_number"}, {"field_name": "issue_date", "data_type": "date"},
  {"field_name": "net", "data_type": "number"}, {"field_name": "tax", "data_type": "number"},
  {"field_name": "total", "data_type": "number", "synonyms": ["Amount due"]}]}' | jq -r .id)

echo "== 2. data policy (resolution) and gate (validation)"
POLICY=$(api "$Q/v1/data-policies" -d '{"name": "Normalize"}' | jq -r .id)
for f in issue_date net tax total; do
  api "$Q/v1/data-policies/$POLICY/fields" -d "{\"field_key\": \"$f\", \"type\": \"string\"}" >/dev/null
done
DATE_RULE=$(api "$Q/v1/data-policies/$POLICY/rules" -d '{"field_key": "issue_date", "rule_type": "date", "config": {"day_first": true}}' | jq -r .id)
for f in net tax total; do
  api "$Q/v1/data-policies/$POLICY/rules" -d "{\"field_key\": \"$f\", \"rule_type\": \"number\", \"config\": {}}" >/dev/null
done
api "$Q/v1/schemas/$SCHEMA/validation-stages" -d '{"name": "Totals add up", "severity": "blocking",
  "mechanisms": [{"type": "business_rules", "rules": [{"check": "sum", "fields": ["net", "tax"], "equals": "total"}]}]}' >/dev/null

echo "== 3. rail: registry -> schema -> resolve -> valid"
api -X PUT "$Q/v1/schemas/$SCHEMA/rail" -d "{\"rail\": [
  {\"type\": \"registry\", \"name\": \"Field Registry\"}, {\"type\": \"schema\", \"name\": \"Extraction\"},
  {\"type\": \"resolve\", \"name\": \"Normalize\", \"json\": {\"policy_ids\": [\"$POLICY\"]}},
  {\"type\": \"valid\", \"name\": \"Checks\"}]}" | jq -c '.phases | map(.phase_id)'

echo "== 4. documents (JSON and multipart)"
D1=$(api "$Q/v1/documents" -d '{"filename": "a.txt",
  "content": "Invoice Number: INV-1\nIssue Date: 14.09.2024\nNet: 1,000.00\nTax: 190.00\nTotal: 1,190.00"}' | jq -r .id)
D2=$(printf '| Invoice Number | INV-2 |\n| Issue Date | 01.02.2024 |\n| Net | 10 |\n| Tax | 1 |\n| Amount due | 99 |\n' |
  curl -sS --fail-with-body -H "$H" -F 'file=@-;filename=b.md;type=text/markdown' "$Q/v1/documents" | jq -r .id)

echo "== 5. pipeline, progress, results"
RUN=$(api "$Q/v1/pipelines" -d "{\"schema_id\": \"$SCHEMA\", \"document_ids\": [\"$D1\", \"$D2\"]}" | jq -r .id)
wait_settled "$RUN"
api "$Q/v1/pipelines/$RUN/progress" | jq -c '{status, completedDocuments, errorDocuments}'
api "$Q/v1/pipelines/$RUN/results" | jq -c '.data[] | {filename, status, fields}'

echo "== 6. review: b.md's total fails the gate and is held; correct it"
ITEM=$(api "$Q/v1/field-reviews?pipeline_id=$RUN" | jq -c '.data[0]')
echo "$ITEM" | jq -c '{field_key, status, current_value}'
PD=$(echo "$ITEM" | jq -r .pipeline_document_id)
api "$Q/v1/field-reviews/$PD/total/resolve" -H "X-Reviewer: Quickstart" \
  -d '{"action": "correct", "corrected_value": 11, "reason": "net + tax"}' | jq -c '{fieldKey, status, resolveAction}'
wait_settled "$RUN"
api "$Q/v1/field-reviews/decisions?pipeline_id=$RUN" | jq -c '.entries[] | {fieldKey, action, priorValue, finalValue, decidedByName}'

echo "== 7. data product and its CSV export"
DP=$(api "$Q/v1/pipelines/$RUN/data-product" -d '{}' | jq -r .dataProduct.id)
api "$Q/v1/data-products/$DP/results" | jq -c '.data[] | {filename, fields, held}'
curl -sS --fail-with-body -H "$H" "$Q/v1/data-products/$DP/export/plain"; echo

echo "== 8. tune the policy and rerun from resolution (extraction is kept)"
api -X PATCH "$Q/v1/data-policies/$POLICY/rules/$DATE_RULE" -d '{"config": {"day_first": true, "output": "%d %b %Y"}}' >/dev/null
api "$Q/v1/pipelines/$RUN/rerun" -d '{"from_phase": "resolution", "dry_run": true}' | jq -c .plan
api "$Q/v1/pipelines/$RUN/rerun" -d '{"from_phase": "resolution"}' | jq -c .
wait_settled "$RUN"
api "$Q/v1/pipelines/$RUN/results" | jq -c '.data[] | {filename, status, issue_date: .fields.issue_date, total: .fields.total}'
DATES=$(api "$Q/v1/pipelines/$RUN/results" | jq -r '.data[].fields.issue_date' | tr '\n' ' ')
[ "$DATES" = "14 Sep 2024 01 Feb 2024 " ] || { echo "unexpected dates after the rerun: $DATES" >&2; exit 1; }
TOTAL=$(api "$Q/v1/pipelines/$RUN/results" | jq -r '.data[1].fields.total')
[ "$TOTAL" = 11 ] || { echo "the corrected total did not survive the rerun: $TOTAL" >&2; exit 1; }
echo "quickstart: ok"
