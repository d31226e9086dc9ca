// The API's OpenAPI spec in Swagger UI; no validator badge (it would call validator.swagger.io).
window.ui = SwaggerUIBundle({ url: "/docs.json", dom_id: "#swagger-ui", validatorUrl: null });
