// The API explorer: Swagger UI (vendored, see README) rendering this server's /openapi.json.
// "Authorize" takes an API key; it stays in this page's memory.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#explorer",
  deepLinking: true,
  persistAuthorization: false,
  tryItOutEnabled: false,
});
