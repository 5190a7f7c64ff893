from aoti_cy.interface import Model as Model
