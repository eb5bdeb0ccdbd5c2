// Swagger UI for /docs, from the vendored bundle (no CDN, no inline script: the page works
// offline and under `script-src 'self'`).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  showExtensions: true,
  // Try-it-out requests go to this server only; no validator badge (it would call an outside service).
  validatorUrl: null,
});
